"""The draft/target cost ratio c, measured by timing forwards of both models in the same run.

c is the time of one draft forward of one token over the time of one target decode step, both
at the same context length (Leviathan et al. 2023, section 3.4). Timing alternates between the two
models, so load from other processes falls on both alike, and medians discard stray slow forwards.
The same loop times target forwards of 2 .. k+1 tokens: the theory assumes verifying k+1 tokens
costs one decode step, and these ratios show how far that holds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.kv_cache import BlockTable
    from server.engine.engine import LLMEngine
    from server.engine.model_runner import ModelRunner

# Rounds run before timing starts (first-call allocations, caches).
WARMUP_ROUNDS = 1


@dataclass(frozen=True)
class CostMeasurement:
    """Median forward times at one context length, in seconds."""

    context_tokens: int
    num_forwards: int
    target_step_s: float  # target, one new token
    draft_step_s: float  # draft, one new token
    verify_s: tuple[float, ...]  # verify_s[n - 1]: target, n new tokens scored at once

    @property
    def cost_ratio(self) -> float:
        return self.draft_step_s / self.target_step_s

    @property
    def verify_ratios(self) -> tuple[float, ...]:
        """Target forward of n tokens over one of a single token, for n = 1, 2, ..."""
        return tuple(seconds / self.target_step_s for seconds in self.verify_s)

    def as_dict(self) -> dict[str, object]:
        return {
            "context_tokens": self.context_tokens,
            "num_forwards": self.num_forwards,
            "target_step_s": self.target_step_s,
            "draft_step_s": self.draft_step_s,
            "cost_ratio": self.cost_ratio,
            "verify_s": list(self.verify_s),
            "verify_ratios": list(self.verify_ratios),
        }


def context_ids(sample_ids: Sequence[int], length: int) -> list[int]:
    """`length` token ids made by repeating a real prompt (content does not change the timing)."""
    repeats = -(-length // max(len(sample_ids), 1))
    return (list(sample_ids) * repeats)[:length]


def measure_cost(
    engine: LLMEngine, context: Sequence[int], max_verify_tokens: int, num_forwards: int
) -> CostMeasurement:
    """Time one-token forwards of both models and n-token target forwards after `context`."""
    target, draft = engine.target, engine.draft
    if draft is None:
        raise ValueError("measuring the cost ratio needs a draft model")
    target_table = _prefilled(target, context)
    draft_table = _prefilled(draft, context)
    probe = list(context[:max_verify_tokens])  # any tokens will do as the new ones
    verify: list[list[float]] = [[] for _ in range(max_verify_tokens)]
    draft_times: list[float] = []
    try:
        for round_index in range(WARMUP_ROUNDS + num_forwards):
            timings = [
                _timed_forward(target, target_table, probe[:n]) for n in range(1, len(probe) + 1)
            ]
            draft_time = _timed_forward(draft, draft_table, probe[:1])
            if round_index >= WARMUP_ROUNDS:
                for n, seconds in enumerate(timings):
                    verify[n].append(seconds)
                draft_times.append(draft_time)
    finally:
        target_table.free(target.allocator)
        draft_table.free(draft.allocator)
    verify_s = tuple(statistics.median(times) for times in verify if times)
    return CostMeasurement(
        context_tokens=len(context),
        num_forwards=num_forwards,
        target_step_s=verify_s[0],
        draft_step_s=statistics.median(draft_times),
        verify_s=verify_s,
    )


def _prefilled(runner: ModelRunner, context: Sequence[int]) -> BlockTable:
    from server.engine.model_runner import ForwardItem

    table = runner.new_table()
    runner.forward([ForwardItem(table, list(context), 1)])
    return table


def _timed_forward(runner: ModelRunner, table: BlockTable, token_ids: list[int]) -> float:
    """Seconds for one forward appending `token_ids`; the cache is rolled back afterwards."""
    from server.engine.model_runner import ForwardItem

    length = table.num_tokens
    started = time.perf_counter()
    runner.forward([ForwardItem(table, token_ids, len(token_ids))])
    elapsed = time.perf_counter() - started
    table.truncate(length, runner.allocator)
    return elapsed
