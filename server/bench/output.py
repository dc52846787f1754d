"""Writing a run's results: results.json (everything, raw runs included), results.md, PNG plots."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.bench import plots, tables
from server.bench.local import LocalResult
from server.bench.runner import Measurement

RESULTS_ROOT = Path(__file__).resolve().parents[2] / "bench" / "results"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
JSON_FILE = "results.json"
MARKDOWN_FILE = "results.md"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def default_out_dir(started: datetime.datetime) -> Path:
    return RESULTS_ROOT / started.strftime(TIMESTAMP_FORMAT)


def jsonable(value: Any) -> Any:
    """Plain JSON values from dataclasses, enums, tuples, paths and dicts with tuple keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {_key(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _key(key: Any) -> str:
    if isinstance(key, tuple):
        return "/".join(str(jsonable(part)) for part in key)
    return str(jsonable(key))


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# A local run


def local_document(
    result: LocalResult, environment: dict[str, Any], decode: Callable[[list[int]], str]
) -> dict[str, Any]:
    """results.json of a local run: settings, analysis and every run with its output."""
    return {
        "kind": "local",
        "created_utc": utc_now().isoformat(),
        "environment": environment,
        "models": result.context,
        "options": jsonable(result.options),
        "prompts": [
            {"id": p.id, "group": p.group, "num_tokens": len(p.token_ids)} for p in result.prompts
        ],
        "dropped_prompts": list(result.dropped_prompts),
        "methods": list(result.methods),
        "skipped_methods": jsonable(result.skipped),
        "cost": result.cost.as_dict() if result.cost else None,
        "summaries": [
            jsonable(summary) | {"tokens_per_s": summary.tokens_per_s}
            for summary in result.summaries
        ],
        "theory": [
            jsonable(row) | {"achieved_fraction": row.achieved_fraction, "best_k": row.best_k}
            for row in result.theory
        ],
        "acceptance_per_position": jsonable(result.acceptance),
        "greedy_check": jsonable(result.greedy) | {"passed": result.greedy.passed},
        "runs": [_run_record(run, decode) for run in result.measurements],
    }


def _run_record(run: Measurement, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    record = jsonable(run)
    record["num_output_tokens"] = run.num_output_tokens
    record["text"] = decode(list(run.generation.token_ids))
    return record


def local_tables(result: LocalResult) -> list[tables.Table]:
    """The report's tables, in reading order."""
    found = []
    for mode in result.options.plan.modes:
        found.append(tables.overview_table(result.summaries, mode))
        found.append(tables.group_table(result.summaries, mode, result.groups))
    if result.cost is not None:
        found.append(tables.cost_table(result.cost))
    if result.theory:
        found.append(tables.theory_table(result.theory))
        found.append(tables.theory_by_k_table(result.theory))
    if result.acceptance:
        found.append(tables.position_table(result.acceptance))
    if result.greedy.agreements:
        found.append(tables.agreement_table(result.greedy))
    return found


def _cuts_line(cuts: dict[str, Any]) -> str:
    if not cuts:
        return "no draft"
    return f"{cuts['projection']} projections, head over {cuts['head_tokens']} tokens"


def local_markdown(result: LocalResult, environment: dict[str, Any]) -> str:
    models = result.context
    packages = environment.get("packages", {})
    lines = [
        "# Benchmark results",
        "",
        f"- target `{models['target']}`, draft `{models['draft']}`, {models['dtype']} on "
        f"{models['device']}, {environment.get('torch_threads')} torch threads, "
        f"{environment.get('cpu_count')} CPUs",
        f"- draft as loaded: {_cuts_line(models.get('draft_cuts', {}))}",
        f"- torch {packages.get('torch')}, transformers {packages.get('transformers')}, "
        f"python {environment.get('python')}, commit {environment.get('git', {}).get('commit')}",
        f"- command: `{' '.join(environment.get('argv', []))}`",
        f"- prompts: {len(result.prompts)} in groups {', '.join(result.groups)}; "
        f"max tokens {result.options.plan.max_tokens}; repeats {result.options.plan.repeats}",
        f"- greedy check: {_greedy_line(result)}",
        f"- machine load (1-minute average) as runs started: {_load_line(result)}",
    ]
    lines += [f"- skipped {s.name}: {s.reason}" for s in result.skipped]
    if result.dropped_prompts:
        lines.append(f"- prompts too long for the context: {', '.join(result.dropped_prompts)}")
    body = "\n".join(table.markdown() for table in local_tables(result))
    return "\n".join(lines) + "\n\n" + body


def _load_line(result: LocalResult) -> str:
    loads = [run.load_average for run in result.measurements if run.load_average is not None]
    if not loads:
        return "unknown"
    return f"{min(loads):.1f} to {max(loads):.1f} ({os.cpu_count()} CPUs)"


def _greedy_line(result: LocalResult) -> str:
    check = result.greedy
    if check.passed:
        return f"passed ({check.num_exact_compared} speculative outputs equal target's)"
    return f"FAILED, {len(check.mismatches)} mismatches of {check.num_exact_compared}"


def write_local(
    out_dir: Path,
    result: LocalResult,
    environment: dict[str, Any],
    decode: Callable[[list[int]], str],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = result.options.plan.modes
    written = [
        write_json(out_dir / JSON_FILE, local_document(result, environment, decode)),
        _write_text(out_dir / MARKDOWN_FILE, local_markdown(result, environment)),
        plots.speedup_by_group(
            result.summaries, modes, result.groups, out_dir / "speedup_by_group.png"
        ),
        plots.latency_distributions(result.measurements, modes, out_dir / "latency.png"),
    ]
    if result.acceptance:
        path = out_dir / "acceptance_per_position.png"
        written.append(plots.acceptance_per_position(result.acceptance, path))
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
