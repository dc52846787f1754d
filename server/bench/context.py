"""The models a benchmark run measures, loaded once: our engines and the peers' sources.

Tests build a `BenchContext` from tiny models and hand it to `run_local`; the command line loads
the real pair with `load_context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from server.bench.peers import PeerSources

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from server.engine.engine import LLMEngine
    from server.engine.loading import DraftOptions, LoadedPair

# The bench runs one request at a time: 512 MiB holds a few thousand tokens of both models in bf16,
# far more than a prompt plus its answer, and leaves memory for the peers' copies of the weights.
BENCH_KV_CACHE_BYTES = 512 << 20


@dataclass(frozen=True)
class BenchContext:
    """Everything the methods run on."""

    tokenizer: PreTrainedTokenizerBase
    # Our engine over the target, with the draft model when there is one.
    engine: LLMEngine
    # Our engine whose target is the draft model, for the `small` method.
    small_engine: LLMEngine | None
    target_name: str
    draft_name: str | None
    dtype: str
    device: str
    eos_token_ids: frozenset[int]
    peers: PeerSources = field(default_factory=PeerSources)
    # How the draft was cheapened (quantization, head size), as loaded.
    draft_cuts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target_name,
            "draft": self.draft_name,
            "draft_cuts": self.draft_cuts,
            "dtype": self.dtype,
            "device": self.device,
            "engine_config": _plain(self.engine.config),
        }


def bench_engine_config() -> Any:
    """The engine's defaults, minus what would favour the methods that run later on a prompt.

    The prefix cache is off: the second method on a prompt would find its KV already computed.
    """
    from server.engine.params import EngineConfig

    return EngineConfig(kv_cache_bytes=BENCH_KV_CACHE_BYTES, enable_prefix_cache=False)


def context_from_pair(
    pair: LoadedPair, dtype: str, device: str, peers: PeerSources
) -> BenchContext:
    """Engines over a loaded pair: the target with its draft, and the draft alone."""
    from dataclasses import replace

    from server.engine.engine import LLMEngine
    from server.engine.params import DrafterKind

    config = bench_engine_config()
    engine = LLMEngine(pair.target, pair.tokenizer, pair.eos_token_ids, config, draft=pair.draft)
    small_engine = None
    if pair.draft is not None:
        small_config = replace(config, drafter=DrafterKind.NONE)
        small_engine = LLMEngine(pair.draft, pair.tokenizer, pair.eos_token_ids, small_config)
    return BenchContext(
        tokenizer=cast("PreTrainedTokenizerBase", pair.tokenizer),
        engine=engine,
        small_engine=small_engine,
        target_name=pair.target_name,
        draft_name=pair.draft_name,
        dtype=dtype,
        device=device,
        eos_token_ids=pair.eos_token_ids,
        peers=peers,
        draft_cuts=_draft_cuts(pair.draft),
    )


def _draft_cuts(draft: Any) -> dict[str, Any]:
    """What the loaded draft is: weight format of its projections and tokens its head scores."""
    if draft is None:
        return {}
    head = draft.head_token_ids
    return {
        "projection": type(draft.layers[0].mlp.down_proj).__name__,
        "head_tokens": draft.config.vocab_size if head is None else int(head.numel()),
    }


def load_context(
    target: str,
    draft: str | None,
    dtype: str,
    device: str,
    torch_dtype: torch.dtype,
    draft_options: DraftOptions | None = None,
) -> BenchContext:
    """Load the pair as the server does, and find the peers' copies of the same weights.

    `draft_options` are the draft's cost cuts (the server's are `LoadConfig.draft_options`); the
    `small` method then runs this same cheapened draft.
    """
    from server.bench.peers import find_peer_sources
    from server.engine.loading import load_pair, resolve_device

    resolved = resolve_device(device)
    pair = load_pair(target, draft, torch_dtype, resolved, draft_options)
    peers = find_peer_sources(target, draft, torch_dtype)
    return context_from_pair(pair, dtype, str(resolved), peers)


def _plain(config: object) -> dict[str, Any]:
    from dataclasses import asdict

    values = asdict(config)  # type: ignore[call-overload]
    return {key: getattr(value, "value", value) for key, value in values.items()}
