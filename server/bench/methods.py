"""The decoding methods the benchmark compares, and how each one runs a single prompt.

A method name on the command line becomes a `MethodSpec` (what to run); `build_methods` turns the
specs into runnable `Method`s over the models of a `BenchContext`. Our engine's methods live here;
transformers and llama.cpp, the peers, live in `server.bench.peers`.

Every method returns a `Generation`: the output token ids (end-of-sequence token included, as the
engine counts it), the wall time from submission to the last token, the time to the first token,
and, for our engine, the speculation counters of the request.
"""

from __future__ import annotations

import enum
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from server.bench.context import BenchContext
    from server.engine.engine import LLMEngine
    from server.engine.params import SamplingParams, SpecParams
    from server.engine.sequence import SpecStats

BASELINE = "target"
# `spec-k` alone on the command line stands for one `spec-kN` per value of `--k`.
FIXED_K_FAMILY = "spec-k"
FIXED_K_NAME = re.compile(r"spec-k(?P<k>\d+)")
PEER_METHODS = ("hf-target", "hf-assisted", "llamacpp", "llamacpp-spec")
ENGINE_METHODS = ("target", "spec-adaptive", "ngram", "combined", "small")
DEFAULT_METHODS = ("target", "spec-adaptive", FIXED_K_FAMILY, "ngram", "combined", "small")
# `all` expands to every method, peers included.
ALL_METHODS = "all"
# The engine's drafter names (`DrafterKind` values), kept here so that parsing imports no torch.
DrafterName = Literal["model", "ngram", "combined", "none"]


class TargetCheck(enum.Enum):
    """How a method's greedy output is held against the `target` method's."""

    EXACT = "exact"  # speculative decoding of the same weights: must be token-for-token equal
    INFO = "info"  # the same model run by other kernels or quantized: agreement is reported
    NONE = "none"  # another model altogether (the draft alone): not compared


class Runtime(enum.Enum):
    ENGINE = "engine"
    TRANSFORMERS = "transformers"
    LLAMACPP = "llamacpp"


@dataclass(frozen=True)
class MethodSpec:
    """One method to benchmark, as named on the command line."""

    name: str
    runtime: Runtime
    check: TargetCheck
    # Engine methods: the drafter and a fixed k or None; peers: "model" when they speculate.
    drafter: DrafterName = "none"
    num_draft_tokens: int | None = None
    # Engine methods whose target is the draft model ("small").
    uses_draft_as_target: bool = False

    @property
    def speculative(self) -> bool:
        return self.drafter != "none"


def method_spec(name: str) -> MethodSpec:
    """The spec of one method name; raises ValueError naming the known methods."""
    fixed = FIXED_K_NAME.fullmatch(name)
    if fixed and int(fixed["k"]) < 1:
        raise ValueError(f"{name}: k must be at least 1")
    if fixed:
        return MethodSpec(name, Runtime.ENGINE, TargetCheck.EXACT, "model", int(fixed["k"]))
    specs = {
        "target": MethodSpec("target", Runtime.ENGINE, TargetCheck.NONE),
        "spec-adaptive": MethodSpec("spec-adaptive", Runtime.ENGINE, TargetCheck.EXACT, "model"),
        "ngram": MethodSpec("ngram", Runtime.ENGINE, TargetCheck.EXACT, "ngram"),
        "combined": MethodSpec("combined", Runtime.ENGINE, TargetCheck.EXACT, "combined"),
        "small": MethodSpec("small", Runtime.ENGINE, TargetCheck.NONE, uses_draft_as_target=True),
        "hf-target": MethodSpec("hf-target", Runtime.TRANSFORMERS, TargetCheck.INFO),
        "hf-assisted": MethodSpec("hf-assisted", Runtime.TRANSFORMERS, TargetCheck.INFO, "model"),
        "llamacpp": MethodSpec("llamacpp", Runtime.LLAMACPP, TargetCheck.INFO),
        "llamacpp-spec": MethodSpec("llamacpp-spec", Runtime.LLAMACPP, TargetCheck.INFO, "model"),
    }
    if name not in specs:
        known = ", ".join([*ENGINE_METHODS, "spec-kN", *PEER_METHODS, ALL_METHODS])
        raise ValueError(f"unknown method {name!r}; known methods: {known}")
    return specs[name]


def parse_methods(names: Sequence[str], fixed_ks: Sequence[int]) -> list[MethodSpec]:
    """Specs for the named methods, `target` first (the baseline), duplicates dropped.

    `spec-k` expands to one fixed-k method per value of `fixed_ks`; `all` to every method.
    """
    expanded: list[str] = [BASELINE]
    for name in names:
        if name == ALL_METHODS:
            expanded += [*ENGINE_METHODS, FIXED_K_FAMILY, *PEER_METHODS]
        else:
            expanded.append(name)
    unique: list[str] = []
    for name in expanded:
        family = [f"{FIXED_K_FAMILY}{k}" for k in fixed_ks] if name == FIXED_K_FAMILY else [name]
        unique += [member for member in family if member not in unique]
    return [method_spec(name) for name in unique]


# ---------------------------------------------------------------------------------------------
# What one run of a method yields


@dataclass(frozen=True)
class DraftCounts:
    """A request's speculation counters, copied out of the engine's mutable `SpecStats`."""

    num_steps: int
    num_drafts: int
    num_draft_tokens: int
    num_accepted_tokens: int
    accepted_per_position: tuple[int, ...]
    drafted_per_position: tuple[int, ...]
    draft_time_s: float
    verify_time_s: float

    @classmethod
    def from_spec_stats(cls, stats: SpecStats) -> DraftCounts:
        return cls(
            num_steps=stats.num_steps,
            num_drafts=stats.num_drafts,
            num_draft_tokens=stats.num_draft_tokens,
            num_accepted_tokens=stats.num_accepted_tokens,
            accepted_per_position=tuple(stats.accepted_per_position),
            drafted_per_position=tuple(stats.drafted_per_position),
            draft_time_s=stats.draft_time_s,
            verify_time_s=stats.verify_time_s,
        )


@dataclass(frozen=True)
class Generation:
    """One prompt run by one method."""

    token_ids: tuple[int, ...]
    wall_s: float  # submission to last token, prefill included
    first_token_s: float  # submission to first token
    draft: DraftCounts | None = None  # our engine only


class Method(Protocol):
    """A runnable method: generates one prompt to completion, alone on the machine."""

    spec: MethodSpec

    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation: ...


@dataclass(frozen=True)
class SkippedMethod:
    name: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Our engine


class EngineMethod:
    """Our engine, one request at a time, with the method's drafter and k on every request."""

    _request_numbers = itertools.count()

    def __init__(self, spec: MethodSpec, engine: LLMEngine) -> None:
        from server.engine.params import DrafterKind, SpecParams

        self.spec = spec
        self.engine = engine
        self.spec_params: SpecParams = SpecParams(
            drafter=DrafterKind(spec.drafter), num_draft_tokens=spec.num_draft_tokens
        )

    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        """Drive the engine step by step, timing the first step that emits a token."""
        request_id = f"bench-{self.spec.name}-{next(self._request_numbers)}"
        started = time.perf_counter()
        seq = self.engine.add_request(request_id, prompt_ids, sampling, self.spec_params)
        first_token_at = None
        while self.engine.has_unfinished():
            for output in self.engine.step():
                if first_token_at is None and output.new_token_ids:
                    first_token_at = time.perf_counter()
        finished_at = time.perf_counter()
        return Generation(
            token_ids=tuple(seq.output_ids),
            wall_s=finished_at - started,
            first_token_s=(first_token_at or finished_at) - started,
            draft=DraftCounts.from_spec_stats(seq.stats),
        )


def build_methods(
    specs: Sequence[MethodSpec], context: BenchContext, max_context_tokens: int
) -> tuple[list[Method], list[SkippedMethod]]:
    """Runnable methods for the specs; those the context cannot run come back with the reason.

    `max_context_tokens`: the longest prompt plus the output budget (llama.cpp sizes its KV by it).
    """
    from server.bench import peers

    methods: list[Method] = []
    skipped: list[SkippedMethod] = []
    for spec in specs:
        try:
            if spec.runtime is Runtime.ENGINE:
                methods.append(_engine_method(spec, context))
            elif spec.runtime is Runtime.TRANSFORMERS:
                methods.append(peers.transformers_method(spec, context))
            else:
                methods.append(peers.llamacpp_method(spec, context, max_context_tokens))
        except peers.Unavailable as reason:
            skipped.append(SkippedMethod(spec.name, str(reason)))
    return methods, skipped


def _engine_method(spec: MethodSpec, context: BenchContext) -> EngineMethod:
    from server.bench.peers import Unavailable

    if spec.uses_draft_as_target:
        if context.small_engine is None:
            raise Unavailable("no draft model is loaded")
        return EngineMethod(spec, context.small_engine)
    if spec.drafter in ("model", "combined") and context.engine.draft is None:
        raise Unavailable("no draft model is loaded")
    return EngineMethod(spec, context.engine)
