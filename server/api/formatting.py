"""Engine outputs to response fields: finish reasons, usage, speculation stats and logprobs."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from server.api.generation import Generation
from server.api.response_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    FinishReasonName,
    PromptTokensDetails,
    RoutingInfo,
    SpeculativeInfo,
    TokenLogprobEntry,
    TopLogprob,
    Usage,
)
from server.engine.engine import RequestOutput
from server.engine.params import DrafterKind, FinishReason
from server.engine.sequence import SpecStats, TokenLogprob

# JSON has no -inf; OpenAI reports this value for tokens of (numerically) zero probability.
LOGPROB_FLOOR = -9999.0
# What a token that ends inside a multi-byte character decodes to on its own.
REPLACEMENT_CHAR = "\ufffd"


def finish_reason_name(reason: FinishReason | None) -> FinishReasonName | None:
    return None if reason is None else reason.value


def usage_of(output: RequestOutput) -> Usage:
    return Usage(
        prompt_tokens=output.num_prompt_tokens,
        completion_tokens=output.num_output_tokens,
        total_tokens=output.num_prompt_tokens + output.num_output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=output.num_cached_tokens),
    )


def speculative_info(stats: SpecStats, drafter: DrafterKind) -> SpeculativeInfo:
    return SpeculativeInfo(
        drafter=drafter.value,
        drafted_tokens=stats.num_draft_tokens,
        accepted_tokens=stats.num_accepted_tokens,
        acceptance_rate=stats.acceptance_rate,
        mean_acceptance_length=stats.mean_acceptance_length,
        accepted_per_position=list(stats.accepted_per_position),
        drafted_per_position=list(stats.drafted_per_position),
        draft_steps=stats.num_drafts,
        target_steps=stats.num_steps,
    )


def completion_logprobs(
    entries: list[TokenLogprob], tokenizer: PreTrainedTokenizerBase, text_offset: int
) -> CompletionLogprobs:
    """The legacy parallel-list format; offsets count characters from `text_offset`."""
    result = CompletionLogprobs()
    for entry in entries:
        token = _token_text(entry.token_id, tokenizer)
        result.tokens.append(token)
        result.token_logprobs.append(_finite(entry.logprob))
        result.top_logprobs.append(
            {_token_text(token_id, tokenizer): _finite(lp) for token_id, lp in entry.top}
        )
        result.text_offset.append(text_offset)
        text_offset += len(token)
    return result


def chat_logprobs(entries: list[TokenLogprob], tokenizer: PreTrainedTokenizerBase) -> ChatLogprobs:
    content = []
    for entry in entries:
        token = _token_text(entry.token_id, tokenizer)
        top = [_top_logprob(token_id, lp, tokenizer) for token_id, lp in entry.top]
        content.append(
            TokenLogprobEntry(
                token=token,
                logprob=_finite(entry.logprob),
                bytes=_token_bytes(entry.token_id, tokenizer),
                top_logprobs=top,
            )
        )
    return ChatLogprobs(content=content)


def _top_logprob(token_id: int, logprob: float, tokenizer: PreTrainedTokenizerBase) -> TopLogprob:
    token = _token_text(token_id, tokenizer)
    token_bytes = _token_bytes(token_id, tokenizer)
    return TopLogprob(token=token, logprob=_finite(logprob), bytes=token_bytes)


def _token_text(token_id: int, tokenizer: PreTrainedTokenizerBase) -> str:
    """A token's text; its vocabulary entry when it alone is not whole characters.

    Decoding such tokens alone gives U+FFFD for all of them, and the completions format keys
    alternatives by text, so they would collide; vocabulary entries are unique.
    """
    text = _decode_one(token_id, tokenizer)
    if REPLACEMENT_CHAR in text:
        return str(tokenizer.convert_ids_to_tokens(token_id))
    return text


def _token_bytes(token_id: int, tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """UTF-8 bytes of a token's text; None when the token alone is not whole characters."""
    text = _decode_one(token_id, tokenizer)
    return None if REPLACEMENT_CHAR in text else list(text.encode())


def _decode_one(token_id: int, tokenizer: PreTrainedTokenizerBase) -> str:
    return str(tokenizer.decode([token_id], skip_special_tokens=False))


def _finite(logprob: float) -> float:
    return max(logprob, LOGPROB_FLOOR)


@dataclass(frozen=True)
class ResponseContext:
    """What every response and chunk of one request repeats."""

    response_id: str
    created: int
    model: str
    drafter: DrafterKind
    want_logprobs: bool
    # Served from the response cache rather than generated for this request.
    cached_response: bool = False
    # How the request was routed; None when the server does not route.
    routing: RoutingInfo | None = None


def cached_response_flag(context: ResponseContext) -> bool | None:
    """The `cached_response` extension: true on answers from the response cache, else absent."""
    return True if context.cached_response else None


def completion_response(
    context: ResponseContext, generation: Generation, tokenizer: PreTrainedTokenizerBase
) -> CompletionResponse:
    final = generation.final
    logprobs = None
    if context.want_logprobs:
        logprobs = completion_logprobs(generation.logprobs, tokenizer, text_offset=0)
    choice = CompletionChoice(
        text=generation.text,
        logprobs=logprobs,
        finish_reason=finish_reason_name(final.finish_reason),
    )
    return CompletionResponse(
        id=context.response_id,
        created=context.created,
        model=context.model,
        choices=[choice],
        usage=usage_of(final),
        speculative=speculative_info(final.stats, context.drafter),
        cached_response=cached_response_flag(context),
        routing=context.routing,
    )


def chat_response(
    context: ResponseContext, generation: Generation, tokenizer: PreTrainedTokenizerBase
) -> ChatCompletionResponse:
    final = generation.final
    logprobs = chat_logprobs(generation.logprobs, tokenizer) if context.want_logprobs else None
    choice = ChatChoice(
        message=AssistantMessage(content=generation.text),
        logprobs=logprobs,
        finish_reason=finish_reason_name(final.finish_reason),
    )
    return ChatCompletionResponse(
        id=context.response_id,
        created=context.created,
        model=context.model,
        choices=[choice],
        usage=usage_of(final),
        speculative=speculative_info(final.stats, context.drafter),
        cached_response=cached_response_flag(context),
        routing=context.routing,
    )
