"""Command-line options of `python -m server.bench`, parsed into one frozen `BenchOptions`.

Nothing heavy is imported here, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from server.bench.datasets import DATASET_NAMES
from server.bench.methods import DEFAULT_METHODS, parse_methods
from server.bench.prompts import PromptLimits, parse_limits
from server.bench.runner import RunPlan, SamplingMode

DTYPE_NAMES = ("bf16", "fp16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEFAULT_FIXED_KS = (2, 4, 6)
DEFAULT_MAX_TOKENS = 128
DEFAULT_CONCURRENCY = (1, 4, 8)
# Rounds of timed forwards per model for the cost ratio; each round is a handful of forwards.
DEFAULT_COST_FORWARDS = 5
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class BenchOptions:
    """Everything a benchmark run was asked to do."""

    datasets: tuple[str, ...] = ("builtin",)
    categories: tuple[str, ...] | None = None
    limits: PromptLimits = PromptLimits()
    plan: RunPlan = RunPlan(max_tokens=DEFAULT_MAX_TOKENS)
    methods: tuple[str, ...] = DEFAULT_METHODS
    fixed_ks: tuple[int, ...] = DEFAULT_FIXED_KS
    # None: the server's defaults (the packaged pair).
    target: str | None = None
    draft: str | None = None
    no_draft: bool = False
    dtype: str = "bf16"
    device: str = "auto"
    # As the server's --draft-quant and --draft-head-tokens ("auto"/None: its measured defaults).
    draft_quant: str = "auto"
    draft_head_tokens: int | None = None
    cost_forwards: int = DEFAULT_COST_FORWARDS
    out: Path | None = None
    # HTTP mode: measure a running server instead of loading models.
    server: str | None = None
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    compare_speculation: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if any(k < 1 for k in self.fixed_ks):
            raise ValueError(f"--k values must be at least 1, got {self.fixed_ks}")
        if any(level < 1 for level in self.concurrency):
            raise ValueError(f"--concurrency values must be at least 1, got {self.concurrency}")
        if self.draft_head_tokens is not None and self.draft_head_tokens < 0:
            raise ValueError(f"--draft-head-tokens must be 0 or more, got {self.draft_head_tokens}")
        if self.cost_forwards < 1:
            raise ValueError(f"--cost-forwards must be at least 1, got {self.cost_forwards}")
        if self.server is not None:
            check_loopback(self.server)
        parse_methods(self.methods, self.fixed_ks)  # raises on an unknown name


def check_loopback(url: str) -> None:
    """Refuse any server but this machine's: the bench sends load, and only here."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server must be an http URL such as http://127.0.0.1:8000, got {url!r}")
    host = parts.hostname
    if host in LOOPBACK_NAMES:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--server must be a loopback address (127.0.0.1, ::1, localhost): {host}")


def _listed(convert: Callable[[str], object]) -> Callable[[str], tuple[object, ...]]:
    def parse(text: str) -> tuple[object, ...]:
        try:
            return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.bench",
        description="Benchmark speculative decoding against plain decoding and peer runtimes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_workload_options(parser)
    _add_method_options(parser)
    _add_server_options(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: bench/results/<UTC timestamp>)",
    )
    return parser


def _add_workload_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument(
        "--dataset",
        type=_listed(str),
        default=("builtin",),
        help=f"comma-separated prompt sets: {', '.join(DATASET_NAMES)} or .jsonl paths",
    )
    group.add_argument("--categories", type=_listed(str), default=None, help="categories to keep")
    group.add_argument(
        "--limit", default=None, help="prompts per category: N, CATEGORY=N, or both comma-separated"
    )
    group.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    group.add_argument(
        "--sampling",
        type=_listed(SamplingMode),
        default=(SamplingMode.GREEDY,),
        help="greedy, sampled (temperature 0.7, seed fixed per prompt), or both",
    )
    group.add_argument(
        "--warmup", type=int, default=1, help="prompts run untimed first, with short answers"
    )
    group.add_argument("--repeats", type=int, default=1, help="timed runs of every prompt")


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("methods and models")
    group.add_argument(
        "--methods",
        type=_listed(str),
        default=DEFAULT_METHODS,
        help="target, spec-adaptive, spec-kN, spec-k (one per --k), ngram, combined, small, "
        "hf-target, hf-assisted, llamacpp, llamacpp-spec, or all; target is always run",
    )
    group.add_argument("--k", type=_listed(int), default=DEFAULT_FIXED_KS, help="fixed k values")
    group.add_argument("--target", default=None, help="as for the server (default: its target)")
    drafts = group.add_mutually_exclusive_group()
    drafts.add_argument("--draft", default=None, help="as for the server (default: its draft)")
    drafts.add_argument("--no-draft", action="store_true", help="load no draft model")
    group.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument(
        "--draft-quant",
        choices=("auto", "none", "int8"),
        default="auto",
        help="as for the server: draft weight quantization (auto: int8 on the CPU)",
    )
    group.add_argument(
        "--draft-head-tokens",
        type=int,
        default=None,
        help="as for the server: frequent tokens the draft head scores (0: all; default: 32768 "
        "on the CPU)",
    )
    group.add_argument(
        "--cost-forwards",
        type=int,
        default=DEFAULT_COST_FORWARDS,
        help="timed forwards of each model for the cost ratio c",
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("measuring a running server")
    group.add_argument("--server", default=None, help="URL of a server on this machine")
    group.add_argument(
        "--concurrency", type=_listed(int), default=DEFAULT_CONCURRENCY, help="clients at once"
    )
    group.add_argument(
        "--compare-speculation",
        action="store_true",
        help="send every request with speculation on and off",
    )


def parse_options(argv: Sequence[str] | None = None) -> BenchOptions:
    """Parse the command line; bad values exit with a usage error naming the option."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return BenchOptions(
            datasets=args.dataset,
            categories=args.categories,
            limits=parse_limits(args.limit),
            plan=RunPlan(
                max_tokens=args.max_tokens,
                modes=tuple(dict.fromkeys(args.sampling)),
                repeats=args.repeats,
                warmup=args.warmup,
            ),
            methods=args.methods,
            fixed_ks=args.k,
            target=args.target,
            draft=args.draft,
            no_draft=args.no_draft,
            dtype=args.dtype,
            device=args.device,
            draft_quant=args.draft_quant,
            draft_head_tokens=args.draft_head_tokens,
            cost_forwards=args.cost_forwards,
            out=args.out,
            server=args.server,
            concurrency=args.concurrency,
            compare_speculation=args.compare_speculation,
        )
    except ValueError as error:
        parser.error(str(error))
