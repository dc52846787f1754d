"""PNG figures of a run, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.bench.methods import BASELINE
from server.bench.report import ALL_GROUPS, Summary
from server.bench.runner import Measurement, SamplingMode

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from server.bench.http_run import HttpRecord, HttpSummary

# Inches per panel; wide enough for a dozen methods' labels.
PANEL_WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 4.0
DPI = 120
# The speedup of the baseline, drawn as a reference line.
NO_SPEEDUP = 1.0


def new_figure(num_rows: int) -> tuple[Figure, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(
        num_rows, 1, figsize=(PANEL_WIDTH_IN, PANEL_HEIGHT_IN * num_rows), squeeze=False
    )
    return figure, [row[0] for row in axes]


def save_figure(figure: Figure, path: Path) -> Path:
    from matplotlib import pyplot

    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    pyplot.close(figure)
    return path


def speedup_by_group(
    summaries: Sequence[Summary], modes: Sequence[SamplingMode], groups: Sequence[str], path: Path
) -> Path:
    """Bars of speedup over target per group and method, with the 95% interval as error bars."""
    figure, axes = new_figure(len(modes))
    columns = [*groups, ALL_GROUPS]
    for axis, mode in zip(axes, modes, strict=True):
        cells = {(s.method, s.group): s for s in summaries if s.mode == mode and s.speedup}
        methods = list(dict.fromkeys(method for method, _ in cells))
        width = 0.8 / max(len(methods), 1)
        for index, method in enumerate(methods):
            xs, points, errors = [], [], [[], []]
            for column, group in enumerate(columns):
                speedup = cells[(method, group)].speedup if (method, group) in cells else None
                if speedup is None:
                    continue
                xs.append(column + (index - (len(methods) - 1) / 2) * width)
                points.append(speedup.point)
                errors[0].append(speedup.point - speedup.low)
                errors[1].append(speedup.high - speedup.point)
            axis.bar(xs, points, width, yerr=errors, capsize=2, label=method)
        axis.axhline(NO_SPEEDUP, color="black", linewidth=0.8)
        axis.set_xticks(range(len(columns)), columns, rotation=20)
        axis.set_ylabel(f"speedup over {BASELINE}")
        axis.set_title(f"{mode.value}: speedup by group (95% bootstrap interval)")
        axis.legend(fontsize="small", ncol=2)
    return save_figure(figure, path)


def acceptance_per_position(
    acceptance: Mapping[tuple[SamplingMode, str], Sequence[float]], path: Path
) -> Path:
    """Lines of the acceptance rate at each draft position, one per method and mode."""
    figure, (axis,) = new_figure(1)
    for (mode, method), rates in acceptance.items():
        positions = range(1, len(rates) + 1)
        style = "-" if mode is SamplingMode.GREEDY else "--"
        axis.plot(positions, rates, style, marker="o", label=f"{method} ({mode.value})")
    axis.set_xlabel("draft position")
    axis.set_ylabel("accepted / drafted")
    axis.set_ylim(0, 1.05)
    axis.set_title("acceptance per draft position")
    axis.legend(fontsize="small")
    return save_figure(figure, path)


def latency_distributions(
    measurements: Sequence[Measurement], modes: Sequence[SamplingMode], path: Path
) -> Path:
    """Box plots of request latency and time to first token per method."""
    figure, axes = new_figure(2 * len(modes))
    for row, mode in enumerate(modes):
        runs = [run for run in measurements if run.mode == mode]
        methods = list(dict.fromkeys(run.method for run in runs))
        for axis, (label, value) in zip(
            axes[2 * row : 2 * row + 2],
            (
                ("request latency s", lambda run: run.generation.wall_s),
                ("time to first token s", lambda run: run.generation.first_token_s),
            ),
            strict=True,
        ):
            data = [[value(run) for run in runs if run.method == method] for method in methods]
            axis.boxplot(data, tick_labels=methods)
            axis.set_ylabel(label)
            axis.set_title(f"{mode.value}: {label}")
            axis.tick_params(axis="x", rotation=20)
    return save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# HTTP runs

SETTING_NAMES = {True: "on", False: "off", None: "default"}


def http_throughput(summaries: Sequence[HttpSummary], path: Path) -> Path:
    """Output tokens per second of the whole server against the number of clients."""
    figure, (axis,) = new_figure(1)
    series = dict.fromkeys((s.speculation, s.mode) for s in summaries)
    for speculation, mode in series:
        points = [s for s in summaries if (s.speculation, s.mode) == (speculation, mode)]
        axis.plot(
            [s.concurrency for s in points],
            [s.throughput_tokens_per_s for s in points],
            marker="o",
            label=f"speculation {SETTING_NAMES[speculation]}, {mode.value}",
        )
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("output tokens/s (all requests)")
    axis.set_title("server throughput")
    axis.legend(fontsize="small")
    return save_figure(figure, path)


def http_latency(records: Sequence[HttpRecord], path: Path) -> Path:
    """Box plots of request latency and time to first text per level and setting."""
    figure, axes = new_figure(2)
    keys = list(dict.fromkeys((r.concurrency, r.speculation) for r in records))
    labels = [f"c={level} {SETTING_NAMES[flag]}" for level, flag in keys]
    for axis, (label, pick) in zip(
        axes,
        (
            ("request latency s", lambda r: r.response.latency_s),
            ("time to first text s", lambda r: r.response.first_token_s),
        ),
        strict=True,
    ):
        data = []
        for key in keys:
            values = [pick(r) for r in records if (r.concurrency, r.speculation) == key]
            data.append([v for v in values if v is not None] or [0.0])
        axis.boxplot(data, tick_labels=labels)
        axis.set_ylabel(label)
        axis.tick_params(axis="x", rotation=20)
    return save_figure(figure, path)
