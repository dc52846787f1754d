"""`python -m server.bench.routing`: run the routing evaluation (see the package docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from server.bench.datasets import DEFAULT_DATA_DIR
from server.bench.output import RESULTS_ROOT, TIMESTAMP_FORMAT, utc_now
from server.bench.routing.records import PromptRecord
from server.bench.routing.report import outcome_table, verdict, write_outputs
from server.bench.routing.run import encode, load_engines, load_prompts, record_prompt, warm_up
from server.bench.routing.sweep import sweep
from server.router.escalation import ConfidenceStat
from server.router.policy import FeatureWeights

PROGRAM = "python -m server.bench.routing"
RECORDS_FILE = "records.jsonl"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_HUMANEVAL_LIMIT = 20
DEFAULT_MATH_LIMIT = 20
DEFAULT_MAX_TOKENS = 256
# Route thresholds in the table; the curve and results.json also hold every distinct split.
DEFAULT_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
DEFAULT_ESCALATION_THRESHOLDS = (0.6, 0.7, 0.8)
# The order of magnitude of an on-demand data-centre GPU hour; it only scales the dollar column.
DEFAULT_PRICE_PER_GPU_HOUR = 2.0
EXIT_OK = 0
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from server.cli import DEFAULT_DRAFT, DEFAULT_TARGET, TORCH_DTYPES

    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Quality against cost of routing between the small and the large model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--humaneval-limit", type=int, default=DEFAULT_HUMANEVAL_LIMIT)
    parser.add_argument("--math-limit", type=int, default=DEFAULT_MATH_LIMIT)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS)
    parser.add_argument(
        "--escalation-thresholds", type=float, nargs="*", default=DEFAULT_ESCALATION_THRESHOLDS
    )
    parser.add_argument("--escalation-stat", choices=get_args(ConfidenceStat), default="mean")
    parser.add_argument(
        "--route-weight",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a weight of the routing score (offline: recorded terms are re-scored)",
    )
    parser.add_argument(
        "--price-per-gpu-hour", type=float, default=DEFAULT_PRICE_PER_GPU_HOUR, help="dollars"
    )
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--draft", default=DEFAULT_DRAFT)
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's own); on a CPU shared with other jobs, 1 "
        "avoids threads waiting on each other",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/routing-*")
    parser.add_argument(
        "--records", type=Path, default=None, help="re-analyse this records.jsonl; load no model"
    )
    return parser


def parse_weights(parser: argparse.ArgumentParser, assignments: Sequence[str]) -> FeatureWeights:
    values = {}
    for assignment in assignments:
        name, _, number = assignment.partition("=")
        try:
            values[name] = float(number)
        except ValueError:
            parser.error(f"argument --route-weight: expected NAME=NUMBER, got {assignment!r}")
    try:
        return FeatureWeights().with_values(values)
    except ValueError as error:
        parser.error(f"argument --route-weight: {error}")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for threshold in [*args.thresholds, *args.escalation_thresholds]:
        if not 0.0 <= threshold <= 1.0:
            parser.error(f"thresholds must lie in [0, 1], got {threshold}")
    if args.max_tokens < 1 or args.humaneval_limit < 0 or args.math_limit < 0:
        parser.error("--max-tokens must be positive and the limits non-negative")
    if args.records is None and args.humaneval_limit + args.math_limit == 0:
        parser.error("no prompts: raise --humaneval-limit or --math-limit")
    if args.price_per_gpu_hour <= 0:
        parser.error("--price-per-gpu-hour must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    weights = parse_weights(parser, args.route_weight)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    started = utc_now()
    out_dir = args.out or RESULTS_ROOT / f"routing-{started.strftime(TIMESTAMP_FORMAT)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.records is not None:
        records = read_records(args.records)
    else:
        try:
            records = run_models(args, out_dir / RECORDS_FILE)
        except (OSError, ValueError) as error:
            print(f"{PROGRAM}: {error}", file=sys.stderr)
            return EXIT_USAGE
    analyse(records, args, weights, out_dir, started.isoformat())
    return EXIT_OK


def run_models(args: argparse.Namespace, records_path: Path) -> list[PromptRecord]:
    """Each prompt on both tiers, one record per line of `records_path` as it completes."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    small, large, router = load_engines(args.target, args.draft, args.dtype, args.device)
    prompts = load_prompts(args.humaneval_limit, args.math_limit, args.data_dir)
    encoded = [encode(prompt, large.tokenizer) for prompt in prompts]
    warm_up([small, large], encoded[0])
    records = []
    with records_path.open("w", encoding="utf-8") as sink:
        for index, prompt in enumerate(encoded, start=1):
            record = record_prompt(prompt, router, small, large, args.max_tokens)
            sink.write(json.dumps(dataclasses.asdict(record)) + "\n")
            sink.flush()
            records.append(record)
            print(_progress(index, len(encoded), record), flush=True)
    return records


def _progress(index: int, total: int, record: PromptRecord) -> str:
    def tier(name: str, run: Any) -> str:
        verdict = "ok" if run.correct else "wrong"
        return f"{name} {verdict} {run.num_output_tokens} tok {run.latency_s:.0f}s"

    return (
        f"[{index}/{total}] {record.id}: {tier('small', record.small)}, "
        f"{tier('large', record.large)}, scored in {record.scoring_s:.2f}s"
    )


def read_records(path: Path) -> list[PromptRecord]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [PromptRecord.from_json(json.loads(line)) for line in lines if line.strip()]


def analyse(
    records: Sequence[PromptRecord],
    args: argparse.Namespace,
    weights: FeatureWeights,
    out_dir: Path,
    started: str,
) -> None:
    """Sweep every policy over the records; print the table and verdict; write the outputs."""
    result = sweep(
        records,
        weights,
        args.thresholds,
        args.escalation_thresholds,
        args.escalation_stat,
        args.price_per_gpu_hour,
    )
    categories = sorted({record.category for record in records})
    table = outcome_table(result, categories)
    lines = verdict(result)
    print()
    print(table.text())
    print("\n".join(lines))
    document = {
        "command": [PROGRAM, *sys.argv[1:]],
        "started": started,
        "options": {key: str(value) for key, value in vars(args).items()},
        "weights": dataclasses.asdict(weights),
        "records": [dataclasses.asdict(record) for record in records],
    }
    for path in write_outputs(out_dir, document, result, table, lines):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
