"""Request bodies to engine inputs: prompt token ids, sampling and speculation parameters.

Value checks that the engine's parameter classes already make (max_tokens, temperature, top_p,
...) are not repeated here: their ValueError messages become 400 responses as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from transformers import PreTrainedTokenizerBase

from server.api.config import ServedModels
from server.api.errors import invalid_request
from server.api.request_schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    GenerationRequest,
    SpeculativeOptions,
    TokenIds,
)
from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind, SamplingParams, SpecParams
from server.router.tiers import Tier

# OpenAI accepts at most this many stop sequences.
MAX_STOP_SEQUENCES = 4
# OpenAI's default max_tokens for /v1/completions; chat defaults to the room left in the context.
DEFAULT_COMPLETION_MAX_TOKENS = 16

# The chat templates we serve know "system"; OpenAI's "developer" role means the same.
TEMPLATE_ROLES = {"developer": "system"}

# The engine's parameter checks start their messages with the field's name: the request's
# parameter each one stands for.
PARAM_OF_MESSAGE = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "logprobs": "logprobs",
    "stop": "stop",
    "k": "speculative.k",
}

T = TypeVar("T")


@dataclass(frozen=True)
class EngineRequest:
    """What the engine needs for one request, and what the response reports back."""

    model: str
    prompt_ids: list[int]
    sampling: SamplingParams
    spec: SpecParams
    # The drafter that will run (the request's choice or the engine's default).
    drafter: DrafterKind


def resolve_model(requested: str | None, models: ServedModels) -> Tier:
    """The tier a request names (a model's own name or a tier name); 400 for anything else."""
    name = models.default_name if requested is None else requested
    tier = models.tier_of(name)
    if tier is not None:
        return tier
    if name == models.draft_name:
        raise invalid_request(
            f"model {name!r} is the draft model; this server does not serve it alone (start it "
            f"with --routing for that). Use {models.target_name!r} (it speculates with the draft)",
            param="model",
            code="model_not_supported",
        )
    available = ", ".join(repr(served) for served in models.request_names)
    raise invalid_request(
        f"model {name!r} is not served here; available: {available}",
        param="model",
        code="model_not_found",
    )


def check_supported(request: GenerationRequest) -> None:
    """Refuse OpenAI features this server does not implement, rather than ignore them."""
    unsupported: list[tuple[bool, str, str]] = [
        (request.n != 1, "n", "only n=1 is supported"),
        (request.presence_penalty != 0, "presence_penalty", "presence_penalty is not supported"),
        (
            request.frequency_penalty != 0,
            "frequency_penalty",
            "frequency_penalty is not supported",
        ),
        (bool(request.logit_bias), "logit_bias", "logit_bias is not supported"),
    ]
    if isinstance(request, CompletionRequest):
        unsupported += [
            (request.best_of not in (None, 1), "best_of", "only best_of=1 is supported"),
            (request.echo, "echo", "echo is not supported"),
            (request.suffix is not None, "suffix", "suffix is not supported"),
        ]
    if isinstance(request, ChatCompletionRequest) and request.top_logprobs is not None:
        unsupported.append(
            (not request.logprobs, "top_logprobs", "top_logprobs needs logprobs set to true")
        )
    for failed, param, message in unsupported:
        if failed:
            raise invalid_request(message, param=param)


# ---------------------------------------------------------------------- prompts


def completion_prompt_ids(
    request: CompletionRequest, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> list[int]:
    """One prompt as token ids: a string, a list of one string, or token ids (bare or nested)."""
    prompt = _single_prompt(request.prompt)
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt, add_special_tokens=True))
    out_of_range = [token for token in prompt if not 0 <= token < vocab_size]
    if out_of_range:
        raise invalid_request(
            f"token ids must be in [0, {vocab_size}); got {out_of_range[0]}", param="prompt"
        )
    return list(prompt)


def _single_prompt(prompt: str | list[str] | TokenIds | list[TokenIds]) -> str | TokenIds:
    """Unwrap a batch of one; refuse batches of several (one prompt per request)."""
    if isinstance(prompt, str) or not prompt or isinstance(prompt[0], int):
        return cast(str | TokenIds, prompt)
    if len(prompt) != 1:
        raise invalid_request(
            f"got {len(prompt)} prompts; send one prompt per request", param="prompt"
        )
    return cast(str | TokenIds, prompt[0])


def chat_prompt_ids(messages: list[ChatMessage], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Render the conversation with the model's chat template, ready for the assistant's turn."""
    if tokenizer.chat_template is None:
        raise invalid_request(
            "this model has no chat template; use /v1/completions", code="no_chat_template"
        )
    conversation = [_template_message(message) for message in messages]
    try:
        rendered: Any = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except Exception as error:  # a template may reject a conversation (e.g. role order)
        raise invalid_request(
            f"the chat template rejected the messages: {error}", param="messages"
        ) from error
    return [int(token) for token in rendered]


def _template_message(message: ChatMessage) -> dict[str, str]:
    entry = {"role": TEMPLATE_ROLES.get(message.role, message.role), "content": message.text}
    if message.name is not None:
        entry["name"] = message.name
    return entry


# ---------------------------------------------------------------------- parameters


def build_engine_request(
    request: GenerationRequest, model: str, prompt_ids: list[int], engine: LLMEngine
) -> EngineRequest:
    """Sampling and speculation parameters for a request whose prompt is already tokenized."""
    max_tokens = _max_tokens(request, len(prompt_ids), engine)
    sampling = _value_checked(
        lambda: SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            seed=request.seed,
            stop=stop_strings(request.stop),
            ignore_eos=request.ignore_eos,
            logprobs=_num_logprobs(request),
            use_prefix_cache=request.cache is None or request.cache.prefix,
        )
    )
    spec = _value_checked(lambda: spec_params(request.speculative))
    drafter = spec.drafter or engine.default_drafter
    if drafter in (DrafterKind.MODEL, DrafterKind.COMBINED) and engine.draft is None:
        raise invalid_request(
            f"drafter {drafter.value!r} needs a draft model and none is loaded; "
            f"use 'ngram' or 'none'",
            param="speculative.drafter",
        )
    return EngineRequest(model, prompt_ids, sampling, spec, drafter)


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid_request(
            f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stops)}",
            param="stop",
        )
    return stops


def spec_params(options: SpeculativeOptions | None) -> SpecParams:
    if options is None:
        return SpecParams()
    if not options.enabled:
        if options.drafter not in (None, DrafterKind.NONE):
            raise invalid_request(
                f"speculative.enabled is false but speculative.drafter is "
                f"{options.drafter.value!r}; drop one of them",
                param="speculative",
            )
        return SpecParams(drafter=DrafterKind.NONE)
    return SpecParams(drafter=options.drafter, num_draft_tokens=options.k)


def _max_tokens(request: GenerationRequest, num_prompt_tokens: int, engine: LLMEngine) -> int:
    """The request's own limit, or a default: 16 for completions, the room left for chat."""
    requested = request.max_tokens
    if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens is not None:
        requested = request.max_completion_tokens
    if requested is not None:
        return requested
    if isinstance(request, CompletionRequest):
        return DEFAULT_COMPLETION_MAX_TOKENS
    capacity = min(engine.max_context, _kv_capacity_tokens(engine))
    if num_prompt_tokens >= capacity:
        raise invalid_request(
            f"the prompt ({num_prompt_tokens} tokens) leaves no room for an answer within the "
            f"context length of {capacity} tokens",
            param="messages",
        )
    return capacity - num_prompt_tokens


def _kv_capacity_tokens(engine: LLMEngine) -> int:
    """Tokens one sequence could hold if it had the whole KV cache to itself."""
    return engine.target.allocator.num_blocks * engine.config.block_size


def _num_logprobs(request: GenerationRequest) -> int | None:
    if isinstance(request, CompletionRequest):
        return request.logprobs
    if isinstance(request, ChatCompletionRequest) and request.logprobs:
        return request.top_logprobs or 0
    return None


def _value_checked(build: Callable[[], T]) -> T:
    """Run a parameter constructor, turning its ValueError into a 400 naming the parameter."""
    try:
        return build()
    except ValueError as error:
        message = str(error)
        param = PARAM_OF_MESSAGE.get(message.split(" ", 1)[0])
        raise invalid_request(message, param=param) from error
