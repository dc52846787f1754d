"""Peer implementations on the same weights: transformers' `generate` and llama.cpp.

- `hf-target`: transformers' greedy (or sampled) `generate` of the target, batch of one;
- `hf-assisted`: the same with `assistant_model=` the draft, transformers' assisted generation with
  its own defaults for the number of assistant tokens;
- `llamacpp`: llama-cpp-python decoding the target's GGUF file (quantized as packaged) alone, with
  as many threads as torch uses.

llama-cpp-python's speculative hook (`draft_model=`) takes prompt-lookup drafters only; driving a
second GGUF model through it would mean writing a drafter with its own KV handling, so
`llamacpp-spec` is always skipped with that reason.

Heavy libraries are imported only when a peer is built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.bench.methods import Generation, MethodSpec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from server.bench.context import BenchContext
    from server.engine.params import SamplingParams

logger = logging.getLogger(__name__)

LLAMACPP_SPEC_REASON = (
    "llama-cpp-python's draft_model hook only takes prompt-lookup drafters, not a second model"
)
# Tokens of slack in llama.cpp's context beyond prompt plus output (it reserves a few itself).
LLAMACPP_CONTEXT_MARGIN = 16


class Unavailable(Exception):
    """A method cannot run in this context; the message says why."""


# ---------------------------------------------------------------------------------------------
# Where the peers find the weights


@dataclass
class HFModels:
    """transformers copies of the pair: given directly (tests) or loaded on first use."""

    target_dir: Path | None = None
    draft_dir: Path | None = None
    torch_dtype: torch.dtype | None = None
    # Why a directory is None.
    missing: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, PreTrainedModel] = field(default_factory=dict)

    def model(self, role: str) -> PreTrainedModel:
        """The "target" or "draft" model; raises Unavailable when it has no source."""
        if role in self.loaded:
            return self.loaded[role]
        directory = self.target_dir if role == "target" else self.draft_dir
        if directory is None:
            raise Unavailable(self.missing.get(role, f"no transformers copy of the {role}"))
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as transformers_logging

        # Its per-tensor progress bar would break the bench's own, and assisted generation warns
        # on every call about arguments it passes to itself.
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        logger.info("loading the %s into transformers from %s", role, directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=self.torch_dtype)
        self.loaded[role] = model.eval()
        return self.loaded[role]


@dataclass(frozen=True)
class PeerSources:
    hf: HFModels = field(default_factory=HFModels)
    target_gguf: Path | None = None
    gguf_missing: str = "no GGUF file of the target"


def find_peer_sources(target: str, draft: str | None, torch_dtype: torch.dtype) -> PeerSources:
    """The transformers directories and the target's GGUF behind model names or paths."""
    hf = HFModels(torch_dtype=torch_dtype)
    hf.target_dir, reason = _hf_directory(target, torch_dtype)
    hf.missing["target"] = reason
    if draft is not None:
        hf.draft_dir, reason = _hf_directory(draft, torch_dtype)
        hf.missing["draft"] = reason
    gguf_path, gguf_reason = _gguf_file(target)
    return PeerSources(hf=hf, target_gguf=gguf_path, gguf_missing=gguf_reason)


def _hf_directory(name_or_path: str, torch_dtype: torch.dtype) -> tuple[Path | None, str]:
    """A Hugging Face directory of the model: the path itself, or a packaged model's conversion."""
    from models.packaged import PACKAGED_MODELS, converted_directory, default_cache_dir, is_complete

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, ""
    if name_or_path in PACKAGED_MODELS:
        directory = converted_directory(
            PACKAGED_MODELS[name_or_path], default_cache_dir(), torch_dtype
        )
        if is_complete(directory):
            return directory, ""
        return None, f"{directory} is not converted yet"
    return None, f"{name_or_path} is not a Hugging Face directory"


def _gguf_file(name_or_path: str) -> tuple[Path | None, str]:
    from models.packaged import (
        PACKAGED_MODELS,
        PackagedModelError,
        assembled_gguf,
        default_cache_dir,
    )

    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, ""
    if name_or_path in PACKAGED_MODELS:
        try:
            return assembled_gguf(PACKAGED_MODELS[name_or_path], default_cache_dir()), ""
        except PackagedModelError as error:
            return None, str(error)
    return None, f"{name_or_path} is not a GGUF file"


# ---------------------------------------------------------------------------------------------
# transformers


class FirstTokenClock:
    """A transformers streamer that notes when the first generated token arrives.

    `generate` hands the streamer the prompt first, then each step's new tokens.
    """

    def __init__(self) -> None:
        self.num_puts = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self.num_puts += 1
        if self.num_puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class HFMethod:
    """transformers' `generate`, alone or assisted by the draft model."""

    def __init__(
        self,
        spec: MethodSpec,
        model: PreTrainedModel,
        eos_token_ids: frozenset[int],
        pad_token_id: int,
        assistant: PreTrainedModel | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.assistant = assistant
        self.eos_token_ids = sorted(eos_token_ids)
        self.pad_token_id = pad_token_id

    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        import torch

        config = self._generation_config(sampling)
        input_ids = torch.tensor([prompt_ids], device=self.model.device)  # [1, T]
        clock = FirstTokenClock()
        if not sampling.greedy and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                assistant_model=self.assistant,
                streamer=clock,
            )
        finished_at = time.perf_counter()
        return Generation(
            token_ids=tuple(output[0, len(prompt_ids) :].tolist()),
            wall_s=finished_at - started,
            first_token_s=(clock.first_token_at or finished_at) - started,
        )

    def _generation_config(self, sampling: SamplingParams) -> Any:
        """Exactly the request's settings: none of the model's own defaults (penalties, top-k)."""
        from transformers import GenerationConfig

        settings: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "repetition_penalty": 1.0,
            "do_sample": not sampling.greedy,
        }
        if not sampling.greedy:
            settings |= {"temperature": sampling.temperature, "top_k": 0, "top_p": 1.0}
        return GenerationConfig(**settings)


def transformers_method(spec: MethodSpec, context: BenchContext) -> HFMethod:
    if context.device != "cpu" and not context.device.startswith("cuda"):
        raise Unavailable(f"transformers peers run on cpu or cuda, not {context.device}")
    target = context.peers.hf.model("target")
    assistant = context.peers.hf.model("draft") if spec.speculative else None
    for model in (target, assistant):
        if model is not None and str(model.device) != context.device:
            model.to(context.device)
    pad = context.tokenizer.pad_token_id
    pad_token_id = pad if pad is not None else min(context.eos_token_ids)
    return HFMethod(spec, target, context.eos_token_ids, pad_token_id, assistant)


# ---------------------------------------------------------------------------------------------
# llama.cpp


class LlamaCppMethod:
    """llama-cpp-python's token generator over the target's GGUF file."""

    def __init__(self, spec: MethodSpec, llama: Any, eos_token_ids: frozenset[int]) -> None:
        self.spec = spec
        self.llama = llama
        self.eos_token_ids = eos_token_ids

    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        # Without a reset, llama.cpp would reuse the KV of the prefix shared with the last call.
        self.llama.reset()
        if sampling.seed is not None:
            self.llama.set_seed(sampling.seed)
        tokens: list[int] = []
        first_token_at = None
        started = time.perf_counter()
        for token in self.llama.generate(prompt_ids, **_llamacpp_sampling(sampling)):
            first_token_at = first_token_at or time.perf_counter()
            tokens.append(int(token))
            if token in self.eos_token_ids or len(tokens) >= sampling.max_tokens:
                break
        finished_at = time.perf_counter()
        return Generation(
            token_ids=tuple(tokens),
            wall_s=finished_at - started,
            first_token_s=(first_token_at or finished_at) - started,
        )


def _llamacpp_sampling(sampling: SamplingParams) -> dict[str, Any]:
    """Greedy is temperature 0 with top-k 1; sampling keeps every token (no top-k, top-p, min-p)."""
    common = {"repeat_penalty": 1.0, "min_p": 0.0, "top_p": 1.0}
    if sampling.greedy:
        return common | {"temp": 0.0, "top_k": 1}
    return common | {"temp": sampling.temperature, "top_k": 0}


def llamacpp_method(
    spec: MethodSpec, context: BenchContext, max_context_tokens: int
) -> LlamaCppMethod:
    if spec.speculative:
        raise Unavailable(LLAMACPP_SPEC_REASON)
    if context.device != "cpu":
        raise Unavailable("the llama.cpp peer runs on the CPU only here")
    try:
        import llama_cpp
    except ImportError as error:
        raise Unavailable(f"llama_cpp is not importable ({error})") from error
    if context.peers.target_gguf is None:
        raise Unavailable(context.peers.gguf_missing)
    import torch

    threads = torch.get_num_threads()
    llama = llama_cpp.Llama(
        model_path=str(context.peers.target_gguf),
        n_ctx=max_context_tokens + LLAMACPP_CONTEXT_MARGIN,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    return LlamaCppMethod(spec, llama, context.eos_token_ids)
