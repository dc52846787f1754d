"""`python -m server.bench`: benchmark speculative decoding on this machine (see bench/README.md).

Loads the target and draft as the server does (or measures a running server with `--server`),
runs every method on every prompt interleaved, prints the tables, writes results.json,
results.md and PNG plots into the results folder, and exits non-zero when a speculative method's
greedy output differs from the target's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.bench.options import BenchOptions, parse_options

if TYPE_CHECKING:
    import torch

    from server.bench.context import BenchContext
    from server.bench.greedy import Mismatch
    from server.bench.local import LocalResult
    from server.engine.loading import DraftOptions

EXIT_OK = 0
EXIT_GREEDY_MISMATCH = 1
EXIT_USAGE = 2
PROGRAM = "python -m server.bench"
# Output tokens shown on either side of a greedy mismatch.
MISMATCH_WINDOW_TOKENS = 8
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Decode = Callable[[list[int]], str]


def main(argv: Sequence[str] | None = None, context: BenchContext | None = None) -> int:
    """Run the benchmark; `context` injects already-built models (tests) instead of loading."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["routing"]:  # `python -m server.bench routing ...`: the routing evaluation
        from server.bench.routing.__main__ import main as routing_main

        return routing_main(args[1:])
    options = parse_options(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    command = [PROGRAM, *(sys.argv[1:] if argv is None else argv)]

    from server.bench.output import default_out_dir, utc_now

    out_dir = options.out or default_out_dir(utc_now())
    if options.server is not None:
        from server.bench.http_run import run_server_bench

        return run_server_bench(options, out_dir, command)
    if context is None:
        try:
            context = _load(options)
        except (OSError, ValueError) as error:
            print(f"{PROGRAM}: cannot load the models: {error}", file=sys.stderr)
            return EXIT_USAGE
    return _run_local(options, context, out_dir, command)


def _load(options: BenchOptions) -> BenchContext:
    from server.bench.context import load_context
    from server.cli import DEFAULT_DRAFT, DEFAULT_TARGET, TORCH_DTYPES
    from server.engine.loading import resolve_device

    target = options.target or DEFAULT_TARGET
    draft = None if options.no_draft else options.draft or DEFAULT_DRAFT
    cuts = draft_options(options, resolve_device(options.device))
    print(
        f"loading target {target} and draft {draft} ({options.dtype}; draft {cuts})",
        file=sys.stderr,
    )
    torch_dtype = TORCH_DTYPES[options.dtype]  # type: ignore[index]
    return load_context(target, draft, options.dtype, options.device, torch_dtype, cuts)


def draft_options(options: BenchOptions, device: torch.device) -> DraftOptions:
    """The draft's cost cuts as the server would apply them with the same flags."""
    from server.cli import LoadConfig

    load = LoadConfig(
        options.target or "",
        options.draft,
        options.dtype,  # type: ignore[arg-type]
        options.device,
        options.draft_quant,  # type: ignore[arg-type]
        options.draft_head_tokens,
    )
    return load.draft_options(device)


def _run_local(
    options: BenchOptions, context: BenchContext, out_dir: Path, command: list[str]
) -> int:
    from tqdm import tqdm

    from server.bench.environment import environment
    from server.bench.local import run_local
    from server.bench.output import RESULTS_ROOT, local_tables, write_local

    with tqdm(desc="bench", unit="run", file=sys.stderr, dynamic_ncols=True) as bar:

        def set_total(total: int) -> None:
            bar.reset(total=total)

        def advance(description: str) -> None:
            bar.set_postfix_str(description, refresh=False)
            bar.update()

        try:
            result = run_local(context, options, on_run=advance, on_methods=set_total)
        except ValueError as error:
            print(f"{PROGRAM}: {error}", file=sys.stderr)
            return EXIT_USAGE

    for skipped in result.skipped:
        print(f"skipped {skipped.name}: {skipped.reason}")
    for table in local_tables(result):
        print(table.text())
    decode: Decode = context.tokenizer.decode
    env = environment(RESULTS_ROOT.parents[1], command)
    for path in write_local(out_dir, result, env, decode):
        print(f"wrote {path}")
    return _report_greedy(result, decode)


def _report_greedy(result: LocalResult, decode: Decode) -> int:
    check = result.greedy
    if check.passed:
        print(f"greedy check passed: {check.num_exact_compared} speculative outputs equal target's")
        return EXIT_OK
    print(f"greedy check FAILED: {len(check.mismatches)} outputs differ from target's")
    for mismatch in check.mismatches:
        print(_describe_mismatch(mismatch, decode))
    return EXIT_GREEDY_MISMATCH


def _describe_mismatch(mismatch: Mismatch, decode: Decode) -> str:
    start = max(mismatch.position - MISMATCH_WINDOW_TOKENS, 0)
    end = mismatch.position + MISMATCH_WINDOW_TOKENS
    expected = list(mismatch.expected_ids[start:end])
    actual = list(mismatch.actual_ids[start:end])
    return (
        f"  {mismatch.method} on {mismatch.prompt_id} (repeat {mismatch.repeat}): first "
        f"difference at output token {mismatch.position} "
        f"({len(mismatch.expected_ids)} vs {len(mismatch.actual_ids)} tokens)\n"
        f"    target: {expected} {decode(expected)!r}\n"
        f"    {mismatch.method}: {actual} {decode(actual)!r}"
    )


if __name__ == "__main__":
    sys.exit(main())
