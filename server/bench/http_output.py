"""Writing the results of an HTTP run: results.json, results.md and two plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.bench import plots
from server.bench.environment import package_versions
from server.bench.options import BenchOptions

if TYPE_CHECKING:
    from server.bench.http_run import HttpRecord, HttpSummary, Phase, TextDifference


def write_http(
    out_dir: Path,
    options: BenchOptions,
    command: list[str],
    records: Sequence[HttpRecord],
    phases: Sequence[Phase],
    summaries: Sequence[HttpSummary],
    differences: Sequence[TextDifference],
) -> list[Path]:
    from server.bench.environment import git_commit
    from server.bench.http_run import http_table
    from server.bench.output import (
        JSON_FILE,
        MARKDOWN_FILE,
        RESULTS_ROOT,
        jsonable,
        utc_now,
        write_json,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    environment = {
        "argv": command,
        "packages": package_versions(),
        "git": git_commit(RESULTS_ROOT.parents[1]),
    }
    document = {
        "kind": "http",
        "created_utc": utc_now().isoformat(),
        "environment": environment,
        "options": jsonable(options),
        "summaries": jsonable(list(summaries)),
        "greedy_text_differences": jsonable(list(differences)),
        "phases": jsonable(list(phases)),
        "requests": jsonable(list(records)),
    }
    markdown = (
        f"# Server benchmark\n\n- server {options.server}\n- command: `{' '.join(command)}`\n\n"
        + http_table(summaries).markdown()
    )
    (out_dir / MARKDOWN_FILE).write_text(markdown, encoding="utf-8")
    return [
        write_json(out_dir / JSON_FILE, document),
        out_dir / MARKDOWN_FILE,
        plots.http_throughput(summaries, out_dir / "http_throughput.png"),
        plots.http_latency(records, out_dir / "http_latency.png"),
    ]
