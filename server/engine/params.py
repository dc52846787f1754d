"""Per-request parameters and engine configuration, as frozen dataclasses validated on creation."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from models.kv_cache import DEFAULT_BLOCK_SIZE


class DrafterKind(str, enum.Enum):
    """Where draft tokens come from."""

    MODEL = "model"  # the small draft model
    NGRAM = "ngram"  # prompt lookup: copy what followed the last n-gram earlier in the text
    COMBINED = "combined"  # prompt lookup when an n-gram matches, the draft model otherwise
    NONE = "none"  # no speculation: plain target decoding


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"  # cancelled by the client or the server


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature == 0 means greedy."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    # 0 keeps every token (no top-k filter).
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    # Number of most likely alternatives to report per output token (from the target); None: none.
    logprobs: int | None = None
    # Whether this request may reuse cached prompt KV and leave its own for others. Changes
    # speed only, never the tokens, which is why a response-cache key leaves it out.
    use_prefix_cache: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def deterministic(self) -> bool:
        """Whether the same request always yields the same output."""
        return self.greedy or self.seed is not None


# OpenAI's API allows at most 20 alternatives per token.
MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SpecParams:
    """Speculation settings for one request; None fields take the engine's defaults."""

    drafter: DrafterKind | None = None
    # A fixed number of draft tokens per step; None lets the engine adapt it.
    num_draft_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.num_draft_tokens is not None and not 1 <= self.num_draft_tokens <= MAX_DRAFT_TOKENS:
            raise ValueError(
                f"k (draft tokens per step) must be in [1, {MAX_DRAFT_TOKENS}], "
                f"got {self.num_draft_tokens}"
            )


# Beyond this, the verify forward and the acceptance tensors grow with little acceptance left.
MAX_DRAFT_TOKENS = 16


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to know that does not come with a request."""

    drafter: DrafterKind = DrafterKind.MODEL
    # Upper bound of the adaptive draft length, and the default for fixed-k requests.
    max_draft_tokens: int = 6
    # Stop drafting once the draft's own top probability falls below this.
    draft_confidence_threshold: float = 0.3
    # Draft cost per token relative to a target step; used to choose k. Measured on the CPU pair.
    draft_cost_ratio: float = 0.25
    # Acceptance assumed before a request has any history of its own.
    prior_acceptance: float = 0.7
    # Weight of the newest step in the running acceptance estimate.
    acceptance_smoothing: float = 0.3
    ngram_max: int = 4
    ngram_min: int = 2
    max_batch_size: int = 16
    # Tokens a single prefill step may process (bounds the latency added to running requests).
    max_prefill_tokens: int = 4096
    kv_cache_bytes: int = 1 << 30
    block_size: int = DEFAULT_BLOCK_SIZE
    # None: the target's own limit.
    max_context: int | None = None
    enable_prefix_cache: bool = True
    # Time both models by batch shape at start-up, then cap draft lengths in batched steps
    # where the batch gains more from shorter drafts (see draft_length.cap_for_batch).
    batch_aware_draft: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_draft_tokens <= MAX_DRAFT_TOKENS:
            raise ValueError(f"max_draft_tokens must be in [1, {MAX_DRAFT_TOKENS}]")
        if not 0 <= self.draft_confidence_threshold < 1:
            raise ValueError("draft_confidence_threshold must be in [0, 1)")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.kv_cache_bytes <= 0:
            raise ValueError("kv_cache_bytes must be positive")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("need 1 <= ngram_min <= ngram_max")
