"""The greedy check: speculative decoding must return exactly the target's greedy tokens.

Speculative methods of our engine (`TargetCheck.EXACT`) are compared token for token with the
`target` method on the same prompt and repeat; any difference is a mismatch and fails the run.
Peers on the same weights (`TargetCheck.INFO`: transformers, llama.cpp's quantized copy) are
compared too, but only reported: other kernels round differently, and one flipped argmax changes
everything after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.bench.methods import BASELINE, TargetCheck, method_spec
from server.bench.runner import Measurement, SamplingMode


@dataclass(frozen=True)
class Mismatch:
    """Where a method's greedy output first left the target's."""

    method: str
    prompt_id: str
    repeat: int
    position: int  # index of the first differing output token
    expected_ids: tuple[int, ...]  # the target's output
    actual_ids: tuple[int, ...]


@dataclass(frozen=True)
class Agreement:
    """How often a method's greedy output equals the target's."""

    method: str
    check: TargetCheck
    num_compared: int
    num_identical: int
    # Mean share of the target's tokens reproduced before the first difference.
    mean_prefix_fraction: float


@dataclass(frozen=True)
class GreedyCheck:
    mismatches: tuple[Mismatch, ...]
    agreements: tuple[Agreement, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def num_exact_compared(self) -> int:
        return sum(a.num_compared for a in self.agreements if a.check is TargetCheck.EXACT)


def first_difference(expected: Sequence[int], actual: Sequence[int]) -> int | None:
    """Index of the first differing token (a length difference counts); None when equal."""
    for position, (wanted, got) in enumerate(zip(expected, actual, strict=False)):
        if wanted != got:
            return position
    if len(expected) != len(actual):
        return min(len(expected), len(actual))
    return None


def check_greedy(measurements: Sequence[Measurement]) -> GreedyCheck:
    """Compare every greedy run of a checked method with the target's run of the same prompt."""
    greedy = [run for run in measurements if run.mode is SamplingMode.GREEDY]
    reference = {
        (run.prompt_id, run.repeat): run.generation.token_ids
        for run in greedy
        if run.method == BASELINE
    }
    mismatches: list[Mismatch] = []
    # Per method: (identical, share of the target's tokens before the first difference) per run.
    compared: dict[str, list[tuple[bool, float]]] = {}
    for run in greedy:
        check = method_spec(run.method).check
        expected = reference.get((run.prompt_id, run.repeat))
        if check is TargetCheck.NONE or expected is None:
            continue
        actual = run.generation.token_ids
        position = first_difference(expected, actual)
        prefix = len(expected) if position is None else position
        compared.setdefault(run.method, []).append(
            (position is None, prefix / max(len(expected), 1))
        )
        if position is not None and check is TargetCheck.EXACT:
            mismatches.append(
                Mismatch(run.method, run.prompt_id, run.repeat, position, expected, actual)
            )
    agreements = tuple(
        Agreement(
            method=method,
            check=method_spec(method).check,
            num_compared=len(results),
            num_identical=sum(identical for identical, _ in results),
            mean_prefix_fraction=sum(fraction for _, fraction in results) / len(results),
        )
        for method, results in compared.items()
    )
    return GreedyCheck(tuple(mismatches), agreements)
