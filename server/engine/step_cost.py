"""Measured forward costs of the target and the draft, by batch shape.

The per-request draft length rule assumes a draft token costs a fixed fraction of a target step.
That holds for one sequence, but not for a batch: on a CPU a bf16 target forward costs about the
same for 1 and for 16 tokens (it is bound by reading the weights), so plain decoding of four
sequences already gets four tokens for the price of one, while each draft position costs more
with more rows (int8 matmuls grow with the rows). Speculating then pays less, or costs more than
it saves. These curves let the engine weigh that per step (see `draft_length.cap_for_batch`).

The curves are timed once at start-up on dummy tokens: `target_s(n)` for a target forward of n
new tokens scored in full (a verify), `draft_s(r)` for a draft forward of r sequences with one
token each. Between timed sizes they are interpolated linearly, and beyond the largest they are
extrapolated at the last segment's slope.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from models.kv_cache import BlockTable
from server.engine.model_runner import ForwardItem, ModelRunner

logger = logging.getLogger(__name__)

# Tokens of context behind the timed forwards: enough that attention reads real KV, small
# enough that the calibration costs a few forwards' worth of time.
CALIBRATION_CONTEXT = 64
# Timed runs of each size after one untimed warm-up run; the fastest is kept, being the one
# least disturbed by other work on the machine.
CALIBRATION_REPEATS = 2
# Any ordinary token: the cost of a forward does not depend on which ids it sees.
DUMMY_TOKEN_ID = 0


@dataclass(frozen=True)
class StepCost:
    """Forward seconds at timed sizes: `target_points` over new tokens, `draft_points` over rows.

    Each is a tuple of (size, seconds) pairs with strictly increasing sizes.
    """

    target_points: tuple[tuple[int, float], ...]
    draft_points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        for name, points in (("target", self.target_points), ("draft", self.draft_points)):
            sizes = [size for size, _ in points]
            if not sizes or sizes != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError(f"{name} cost points need increasing sizes >= 1, got {sizes}")

    def target_s(self, num_tokens: int) -> float:
        """Seconds of a target forward over `num_tokens` new tokens (all scored)."""
        return _interpolate(self.target_points, num_tokens)

    def draft_s(self, num_rows: int) -> float:
        """Seconds of a draft forward over `num_rows` sequences of one token each; 0 for none."""
        return 0.0 if num_rows == 0 else _interpolate(self.draft_points, num_rows)


def _interpolate(points: tuple[tuple[int, float], ...], size: int) -> float:
    if len(points) == 1:
        return points[0][1] * max(size, 1) / points[0][0] if size > points[0][0] else points[0][1]
    if size <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if size <= x1:
            return y0 + (y1 - y0) * (size - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return y1 + max(y1 - y0, 0.0) * (size - x1) / (x1 - x0)


def powers_of_two_up_to(limit: int) -> list[int]:
    """1, 2, 4, ... and `limit` itself as the last size."""
    sizes = []
    size = 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return sizes + [limit]


def calibrate(
    target: ModelRunner, draft: ModelRunner | None, max_tokens: int, max_rows: int
) -> StepCost | None:
    """Time the target at up to `max_tokens` new tokens and the draft at up to `max_rows` rows.

    Returns None when a pool lacks the free blocks to do it (a deliberately tiny KV cache); the
    engine then keeps the per-request rule alone.
    """
    target_sizes = powers_of_two_up_to(max_tokens)
    draft_sizes = powers_of_two_up_to(max_rows) if draft is not None else []
    if not _has_room(target, [CALIBRATION_CONTEXT + max_tokens]):
        return None
    if draft is not None and not _has_room(draft, [CALIBRATION_CONTEXT + 1] * max_rows):
        return None

    started = time.perf_counter()
    runners = [target] + ([draft] if draft is not None else [])
    counters = [(runner.num_computed_tokens, runner.busy_s) for runner in runners]
    target_points = tuple((n, _time_forward(target, 1, n)) for n in target_sizes)
    draft_points = tuple((r, _time_forward(draft, r, 1)) for r in draft_sizes) if draft else ()
    # Calibration is not serving: the runners' counters report requests' work only.
    for runner, (num_tokens, busy_s) in zip(runners, counters, strict=True):
        runner.num_computed_tokens, runner.busy_s = num_tokens, busy_s
    cost = StepCost(target_points, draft_points or ((1, 0.0),))
    logger.info(
        "step cost calibrated in %.1f s: target %s, draft %s",
        time.perf_counter() - started,
        _describe(target_points),
        _describe(draft_points),
    )
    return cost


def _has_room(runner: ModelRunner, lengths: list[int]) -> bool:
    needed = sum(-(-length // runner.block_size) for length in lengths)
    return needed <= runner.allocator.num_free


def _time_forward(runner: ModelRunner, num_tables: int, tokens_each: int) -> float:
    """Seconds of one forward of `tokens_each` new tokens, all scored, on `num_tables` sequences.

    The target is timed as one sequence of n tokens (a verify), the draft as r sequences of one.
    """
    tables = _table_with_context(runner, num_tables)
    try:
        items = [
            ForwardItem(table, [DUMMY_TOKEN_ID] * tokens_each, tokens_each) for table in tables
        ]
        return _fastest(runner, items, tables)
    finally:
        for table in tables:
            table.free(runner.allocator)


def _table_with_context(runner: ModelRunner, count: int) -> list[BlockTable]:
    """`count` tables holding CALIBRATION_CONTEXT tokens each, prefilled in one forward."""
    tables = [runner.new_table() for _ in range(count)]
    runner.forward([ForwardItem(t, [DUMMY_TOKEN_ID] * CALIBRATION_CONTEXT, 1) for t in tables])
    return tables


def _fastest(runner: ModelRunner, items: list[ForwardItem], tables: list[BlockTable]) -> float:
    """Fastest of the timed runs of `items`, rolling the tables back to their context each time."""
    times = []
    for run in range(1 + CALIBRATION_REPEATS):
        started = time.perf_counter()
        runner.forward(items)
        if run:
            times.append(time.perf_counter() - started)
        for table in tables:
            table.truncate(CALIBRATION_CONTEXT, runner.allocator)
    return min(times)


def _describe(points: tuple[tuple[int, float], ...]) -> str:
    return ", ".join(f"{size}: {seconds * 1e3:.1f} ms" for size, seconds in points) or "-"
