"""The routing evaluation's outputs: the table, the verdict on the target, the curve, the files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.bench.output import jsonable, write_json
from server.bench.plots import new_figure, save_figure
from server.bench.routing.sweep import (
    MIN_SMALL_SHARE,
    QUALITY_KEPT,
    REQUESTS_PER_COST_UNIT,
    Outcome,
    Sweep,
)
from server.bench.tables import Table

JSON_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "routing.png"
PERCENT = 100.0


def outcome_table(sweep: Sweep, categories: Sequence[str]) -> Table:
    headers = (
        "policy",
        "quality",
        *categories,
        "to small",
        "answered small",
        "escalated",
        "mean s",
        "p90 s",
        "model-s",
        f"$/{REQUESTS_PER_COST_UNIT} req",
    )
    outcomes = [sweep.small_only, sweep.large_only, *sweep.table]
    rows = tuple(_row(outcome, categories) for outcome in outcomes)
    return Table("Routing: quality, share sent to the small model, latency and cost", headers, rows)


def _row(outcome: Outcome, categories: Sequence[str]) -> tuple[str, ...]:
    return (
        outcome.policy.name,
        _percent(outcome.quality),
        *(_percent(outcome.quality_by_category[category]) for category in categories),
        _percent(outcome.small_share),
        _percent(outcome.answered_small_share),
        _percent(outcome.escalated_share),
        f"{outcome.mean_latency_s:.1f}",
        f"{outcome.p90_latency_s:.1f}",
        f"{outcome.model_s:.0f}",
        f"{outcome.cost_per_1k_usd:.2f}",
    )


def _percent(fraction: float) -> str:
    return f"{fraction * PERCENT:.0f}%"


def verdict(sweep: Sweep) -> list[str]:
    """Whether some auto policy keeps 95% of large-only quality with 30% answered small, and why."""
    large, small = sweep.large_only, sweep.small_only
    needed = QUALITY_KEPT * large.quality
    lines = [
        f"large-only quality {_percent(large.quality)}, small-only {_percent(small.quality)}; "
        f"the target needs >= {_percent(needed)} with >= {_percent(MIN_SMALL_SHARE)} answered "
        f"by the small model.",
        f"An oracle router could answer {_percent(sweep.oracle_small_share)} with the small "
        f"model at no loss (those where small is right or large is wrong).",
    ]
    best = sweep.best
    if best is not None:
        lines.append(
            f"Target reached: {best.policy.name} keeps {_percent(best.quality)} "
            f"({_percent(best.quality / large.quality if large.quality else 1.0)} of large-only) "
            f"with {_percent(best.answered_small_share)} answered by the small model, at "
            f"{_percent(best.cost_usd / large.cost_usd)} of large-only's cost."
        )
        return lines
    candidates = [o for curve in sweep.curves.values() for o in curve]
    enough_small = [o for o in candidates if o.answered_small_share >= MIN_SMALL_SHARE]
    closest = max(enough_small, key=lambda o: o.quality, default=None)
    if closest is None:
        lines.append("Target not reached: no policy answers 30% of requests with the small model.")
    else:
        lines.append(
            f"Target not reached: the best policy answering >= {_percent(MIN_SMALL_SHARE)} with "
            f"the small model, {closest.policy.name}, keeps {_percent(closest.quality)} "
            f"(needs {_percent(needed)})."
        )
    return lines


def plot_curve(sweep: Sweep, path: Path) -> Path:
    """Quality against cost per request: the auto curves, the fixed tiers, the 95% line."""
    figure, (axis,) = new_figure(1)
    for name, outcomes in sweep.curves.items():
        ordered = sorted(outcomes, key=lambda o: o.cost_per_1k_usd)
        axis.plot(
            [o.cost_per_1k_usd for o in ordered],
            [o.quality * PERCENT for o in ordered],
            marker=".",
            label=name,
        )
    for outcome, marker in ((sweep.small_only, "s"), (sweep.large_only, "D")):
        axis.plot(
            outcome.cost_per_1k_usd,
            outcome.quality * PERCENT,
            marker,
            markersize=9,
            label=outcome.policy.name,
        )
    axis.axhline(
        QUALITY_KEPT * sweep.large_only.quality * PERCENT,
        color="grey",
        linestyle="--",
        label=f"{_percent(QUALITY_KEPT)} of large-only",
    )
    axis.set_xlabel(f"compute cost, $ per {REQUESTS_PER_COST_UNIT} requests")
    axis.set_ylabel("quality, % correct")
    axis.set_title("Routing: quality against cost (auto over every threshold)")
    axis.legend(fontsize="small")
    return save_figure(figure, path)


def write_outputs(
    out_dir: Path, document: dict[str, Any], sweep: Sweep, table: Table, lines: Sequence[str]
) -> list[Path]:
    """results.json, results.md and routing.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**document, "sweep": jsonable(sweep), "verdict": list(lines)}
    markdown = table.markdown() + "\n" + "\n".join(lines) + "\n"
    (out_dir / MARKDOWN_FILE).write_text(markdown, encoding="utf-8")
    return [
        write_json(out_dir / JSON_FILE, payload),
        out_dir / MARKDOWN_FILE,
        plot_curve(sweep, out_dir / PLOT_FILE),
    ]
