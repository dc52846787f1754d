"""Tables of a local run, rendered as Markdown (results.md) or aligned text (the console)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.bench.cost import CostMeasurement
from server.bench.greedy import GreedyCheck
from server.bench.methods import TargetCheck
from server.bench.report import ALL_GROUPS, Interval, Summary
from server.bench.runner import SamplingMode
from server.bench.theory import TheoryRow

BYTES_PER_MIB = 1 << 20
MISSING = "-"
PERCENT = 100.0


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", _pipe_row(self.headers)]
        lines.append(_pipe_row(tuple("---" for _ in self.headers)))
        lines += [_pipe_row(row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [
            max(len(cell) for cell in column)
            for column in zip(self.headers, *self.rows, strict=True)
        ]
        lines = [self.title, _aligned(self.headers, widths)]
        lines.append("  ".join("-" * width for width in widths))
        lines += [_aligned(row, widths) for row in self.rows]
        return "\n".join(lines) + "\n"


def _pipe_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    # The first column (names) is left-aligned, numbers right-aligned.
    parts = [cells[0].ljust(widths[0])]
    parts += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join(parts).rstrip()


# ---------------------------------------------------------------------------------------------
# Cell formats


def number(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * PERCENT:.0f}%"


def interval(value: Interval | None) -> str:
    if value is None:
        return MISSING
    return f"{value.point:.2f} [{value.low:.2f}, {value.high:.2f}]"


def mebibytes(value: int) -> str:
    return f"{value / BYTES_PER_MIB:.0f}"


# ---------------------------------------------------------------------------------------------
# The tables


def overview_table(summaries: Sequence[Summary], mode: SamplingMode) -> Table:
    headers = (
        "method",
        "tok/s",
        "speedup [95% CI]",
        "accept",
        "tau",
        "k-bar",
        "TTFT p50 s",
        "latency p50/p90/p99 s",
        "draft",
        "verify",
        "peak RSS MiB",
    )
    rows = tuple(
        (
            s.method,
            number(s.tokens_per_s),
            interval(s.speedup),
            percent(s.acceptance_rate),
            number(s.mean_acceptance_length),
            number(s.drafted_per_step, 1),
            number(s.first_token_p50_s),
            "/".join(f"{seconds:.1f}" for seconds in s.latency_s),
            percent(s.draft_share),
            percent(s.verify_share),
            mebibytes(s.peak_rss_bytes),
        )
        for s in summaries
        if s.mode == mode and s.group == ALL_GROUPS
    )
    return Table(f"{mode.value}: all prompts", headers, rows)


def group_table(summaries: Sequence[Summary], mode: SamplingMode, groups: Sequence[str]) -> Table:
    """tok/s and speedup of every method in every group."""
    cells = {(s.method, s.group): s for s in summaries if s.mode == mode}
    methods = list(dict.fromkeys(s.method for s in summaries if s.mode == mode))
    columns = [*groups, ALL_GROUPS]
    headers = ("method", *[f"{group} tok/s" for group in columns], *columns)
    rows = []
    for method in methods:
        found = [cells.get((method, group)) for group in columns]
        rows.append(
            (
                method,
                *[number(s.tokens_per_s) if s else MISSING for s in found],
                *[interval(s.speedup) if s else MISSING for s in found],
            )
        )
    return Table(f"{mode.value}: tok/s and speedup over target by group", headers, tuple(rows))


def theory_table(rows: Sequence[TheoryRow]) -> Table:
    headers = (
        "method",
        "mode",
        "c",
        "c in run",
        "k-bar",
        "tau",
        "alpha",
        "theory",
        "theory @ c in run",
        "measured",
        "achieved",
        "best k (theory)",
    )
    body = tuple(
        (
            row.method,
            row.mode.value,
            number(row.cost_ratio),
            number(row.cost_ratio_in_run),
            number(row.drafted_per_step, 1),
            number(row.tokens_per_step),
            number(row.acceptance_per_token),
            number(row.theory),
            number(row.theory_in_run),
            interval(row.measured),
            percent(row.achieved_fraction),
            f"{row.best_k} ({row.theory_by_k[row.best_k - 1]:.2f})",
        )
        for row in rows
    )
    return Table("speedup in theory and achieved", headers, body)


def theory_by_k_table(rows: Sequence[TheoryRow]) -> Table:
    max_k = max((len(row.theory_by_k) for row in rows), default=0)
    headers = ("method", "mode", *[f"k={k}" for k in range(1, max_k + 1)])
    body = tuple(
        (row.method, row.mode.value, *[number(value) for value in row.theory_by_k]) for row in rows
    )
    return Table("theoretical speedup by fixed k, at each method's alpha and c", headers, body)


def position_table(acceptance: Mapping[tuple[SamplingMode, str], Sequence[float]]) -> Table:
    max_positions = max((len(rates) for rates in acceptance.values()), default=0)
    headers = ("method", "mode", *[f"pos {i + 1}" for i in range(max_positions)])
    rows = tuple(
        (method, mode.value, *[percent(rate) for rate in rates])
        + (MISSING,) * (max_positions - len(rates))
        for (mode, method), rates in acceptance.items()
    )
    return Table("acceptance per draft position", headers, rows)


def cost_table(cost: CostMeasurement) -> Table:
    headers = ("quantity", "value")
    rows = [
        ("context tokens", str(cost.context_tokens)),
        ("timed forwards each", str(cost.num_forwards)),
        ("target step ms", number(cost.target_step_s * 1000, 1)),
        ("draft step ms", number(cost.draft_step_s * 1000, 1)),
        ("c = draft / target", number(cost.cost_ratio, 3)),
    ]
    rows += [
        (f"verify {n} tokens / one step", number(ratio))
        for n, ratio in enumerate(cost.verify_ratios, start=1)
        if n > 1
    ]
    return Table("measured cost ratio", headers, tuple(rows))


def agreement_table(check: GreedyCheck) -> Table:
    headers = ("method", "check", "identical", "mean prefix kept")
    rows = tuple(
        (
            a.method,
            "must match" if a.check is TargetCheck.EXACT else "information",
            f"{a.num_identical}/{a.num_compared}",
            percent(a.mean_prefix_fraction),
        )
        for a in check.agreements
    )
    return Table("greedy output against target", headers, rows)
