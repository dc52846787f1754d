"""Command-line options of `python -m server`, parsed into frozen configuration objects.

A bad value is reported by argparse as a usage error naming the option, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from server.api.config import MAX_PORT, LogLevel, ServerConfig
from server.engine.loading import DraftOptions
from server.engine.params import MAX_DRAFT_TOKENS, DrafterKind, EngineConfig
from server.router.config import DEFAULT_ROUTE_THRESHOLD, RouterConfig
from server.router.escalation import ConfidenceStat, EscalationConfig
from server.router.policy import FeatureWeights
from server.router.uncertainty import DEFAULT_MAX_SCORED_TOKENS

DtypeName = Literal["bf16", "fp16", "fp32"]
TORCH_DTYPES: dict[DtypeName, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}

# The packaged pair: Qwen2.5-Coder models share one tokenizer, so the small one can draft.
DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"
DEFAULT_DRAFT = "qwen2.5-coder-0.5b-instruct"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
BYTES_PER_GIB = 1 << 30
BYTES_PER_MIB = 1 << 20
# Enough for a batch of 16 long code answers with the packaged pair in bf16.
DEFAULT_KV_CACHE_GIB = 1.0
DEFAULT_MAX_QUEUED = 64
# Served from the command line, repeated greedy or seeded requests are answered from memory.
DEFAULT_RESPONSE_CACHE_SIZE = 256

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class LoadConfig:
    """Which checkpoints to load, in what precision, onto which device."""

    target: str
    # None: no draft model (speculation by prompt lookup only, or none).
    draft: str | None
    dtype: DtypeName
    device: str
    # "auto": int8 with a trimmed head on the CPU, untouched on CUDA (DraftOptions.auto).
    draft_quantization: Literal["auto", "none", "int8"] = "auto"
    # None with "auto": the measured default; 0: the full head.
    draft_head_tokens: int | None = None

    def draft_options(self, device: torch.device) -> DraftOptions:
        """The draft's cost cuts for `device`, explicit choices overriding the measured defaults."""
        options = DraftOptions.auto(device)
        if self.draft_quantization != "auto":
            options = dataclasses.replace(options, quantization=self.draft_quantization)
        if self.draft_head_tokens is not None:
            head = self.draft_head_tokens or None
            options = dataclasses.replace(options, head_tokens=head)
        return options

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


@dataclass(frozen=True)
class LaunchConfig:
    """Everything `python -m server` was asked to do."""

    load: LoadConfig
    engine: EngineConfig
    server: ServerConfig
    # The model answering requests that name none; None: the target.
    default_model: str | None
    # None: serve the target only; else the draft also answers alone and `auto` routes.
    routing: RouterConfig | None = None


# ---------------------------------------------------------------------- value types


def _bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _weight(text: str) -> tuple[str, float]:
    name, equals, number = text.partition("=")
    try:
        value = float(number)
    except ValueError:
        value = None
    if not equals or not name or value is None:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    return name, value


def _device(text: str) -> str:
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="OpenAI-compatible LLM server with speculative decoding.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_options(parser)
    _add_engine_options(parser)
    _add_server_options(parser)
    _add_routing_options(parser)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--target", default=DEFAULT_TARGET, help="target model: packaged name, GGUF file or HF dir"
    )
    drafts = group.add_mutually_exclusive_group()
    drafts.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model (same tokenizer)")
    drafts.add_argument("--no-draft", action="store_true", help="load no draft model")
    group.add_argument("--dtype", choices=get_args(DtypeName), default="bf16")
    group.add_argument(
        "--draft-quant",
        choices=("auto", "none", "int8"),
        default="auto",
        help="draft weight quantization (auto: int8 on the CPU, none on CUDA)",
    )
    group.add_argument(
        "--draft-head-tokens",
        type=_bounded_int(0),
        default=None,
        help="score only this many frequent tokens in the draft head (0: all; default: "
        "32768 on the CPU, all on CUDA)",
    )
    group.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument(
        "--default-model",
        default=None,
        help="model or tier answering requests that name none (default: the target); with "
        "--routing also small, large or auto",
    )


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--kv-cache-gb",
        type=_positive_float,
        default=DEFAULT_KV_CACHE_GIB,
        help="KV cache budget in GiB, shared by the target and the draft",
    )
    group.add_argument(
        "--drafter",
        choices=[kind.value for kind in DrafterKind],
        default=None,
        help="default drafter (default: combined with a draft model, none without)",
    )
    group.add_argument(
        "--k",
        type=_bounded_int(1, MAX_DRAFT_TOKENS),
        default=EngineConfig.max_draft_tokens,
        help="most draft tokens per step",
    )
    group.add_argument(
        "--max-batch-size",
        type=_bounded_int(1),
        default=EngineConfig.max_batch_size,
        help="most requests decoded together",
    )
    group.add_argument(
        "--max-context",
        type=_bounded_int(1),
        default=None,
        help="context limit in tokens (default: the models' own)",
    )
    group.add_argument(
        "--no-prefix-cache", action="store_true", help="do not reuse KV of shared prompt prefixes"
    )
    group.add_argument(
        "--batch-aware-draft",
        action="store_true",
        help="time both models by batch shape at start-up and, when several requests decode "
        "together, shorten or skip drafts where that gives the batch more tokens per second",
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--host", default=DEFAULT_HOST)
    group.add_argument("--port", type=_bounded_int(1, MAX_PORT), default=DEFAULT_PORT)
    group.add_argument(
        "--max-queued",
        type=_bounded_int(1),
        default=DEFAULT_MAX_QUEUED,
        help="requests allowed to wait; more are refused with 503",
    )
    group.add_argument(
        "--response-cache-size",
        type=_bounded_int(0),
        default=DEFAULT_RESPONSE_CACHE_SIZE,
        help="whole responses kept for repeated deterministic requests (0: none)",
    )
    group.add_argument(
        "--response-cache-mb",
        type=_positive_float,
        default=ServerConfig.response_cache_bytes / BYTES_PER_MIB,
        help="memory bound of the response cache in MiB (estimated)",
    )
    group.add_argument("--log-level", choices=get_args(LogLevel), default="info")


def _add_routing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("routing")
    group.add_argument(
        "--routing",
        action="store_true",
        help="also serve the draft alone (model `small`, plain decoding, its own KV pool) and "
        "route model `auto` between it and the target; the draft then keeps its full head",
    )
    group.add_argument(
        "--route-threshold",
        type=_unit_float,
        default=DEFAULT_ROUTE_THRESHOLD,
        help="auto requests whose routing score is below this go to the small model",
    )
    group.add_argument(
        "--route-weight",
        type=_weight,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one weight of the routing score (repeatable); names: "
        + ", ".join(field.name for field in dataclasses.fields(FeatureWeights)),
    )
    group.add_argument(
        "--route-scored-tokens",
        type=_bounded_int(1),
        default=DEFAULT_MAX_SCORED_TOKENS,
        help="last prompt tokens the small model scores to route a request",
    )
    group.add_argument(
        "--escalation-threshold",
        type=_unit_float,
        default=None,
        help="redo a non-streamed auto answer of the small model on the target when its "
        "confidence is below this (default: never)",
    )
    group.add_argument(
        "--escalation-stat",
        choices=get_args(ConfidenceStat),
        default="mean",
        help="confidence of an answer: mean or min probability of its tokens",
    )


def parse_args(argv: Sequence[str] | None = None) -> LaunchConfig:
    """Parse the command line; exits with a usage error on bad or contradictory values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    draft = None if args.no_draft else args.draft
    drafter = _drafter(parser, args.drafter, has_draft=draft is not None)
    try:
        engine = EngineConfig(
            drafter=drafter,
            max_draft_tokens=args.k,
            max_batch_size=args.max_batch_size,
            kv_cache_bytes=int(args.kv_cache_gb * BYTES_PER_GIB),
            max_context=args.max_context,
            enable_prefix_cache=not args.no_prefix_cache,
            batch_aware_draft=args.batch_aware_draft,
        )
        server = ServerConfig(
            host=args.host,
            port=args.port,
            max_queued=args.max_queued,
            response_cache_size=args.response_cache_size,
            response_cache_bytes=int(args.response_cache_mb * BYTES_PER_MIB),
            log_level=args.log_level,
        )
        routing = _routing(parser, args, has_draft=draft is not None)
    except ValueError as error:
        parser.error(str(error))
    load = LoadConfig(
        target=args.target,
        draft=draft,
        dtype=args.dtype,
        device=args.device,
        draft_quantization=args.draft_quant,
        draft_head_tokens=_draft_head_tokens(parser, args.draft_head_tokens, routing is not None),
    )
    return LaunchConfig(
        load=load,
        engine=engine,
        server=server,
        default_model=args.default_model,
        routing=routing,
    )


def _routing(
    parser: argparse.ArgumentParser, args: argparse.Namespace, has_draft: bool
) -> RouterConfig | None:
    """The router's configuration with --routing, else None; raises ValueError on bad values."""
    if not args.routing:
        return None
    if not has_draft:
        parser.error("argument --routing: the small tier serves the draft model; drop --no-draft")
    escalation = None
    if args.escalation_threshold is not None:
        escalation = EscalationConfig(args.escalation_threshold, args.escalation_stat)
    return RouterConfig(
        threshold=args.route_threshold,
        weights=FeatureWeights().with_values(dict(args.route_weight)),
        max_scored_tokens=args.route_scored_tokens,
        escalation=escalation,
    )


def _draft_head_tokens(
    parser: argparse.ArgumentParser, head_tokens: int | None, routing: bool
) -> int | None:
    """With routing the draft answers alone, so its head keeps every token (0 means all)."""
    if not routing:
        return head_tokens
    if head_tokens:
        parser.error(
            "argument --draft-head-tokens: with --routing the draft answers alone and needs its "
            "full head; use 0 or leave it out"
        )
    return 0


def _drafter(parser: argparse.ArgumentParser, choice: str | None, has_draft: bool) -> DrafterKind:
    if choice is None:
        # Measured (bench/results/20261203T192637Z): combined beat the draft model alone on every
        # prompt group, 1.86x against 1.63x over target-only overall.
        return DrafterKind.COMBINED if has_draft else DrafterKind.NONE
    drafter = DrafterKind(choice)
    if not has_draft and drafter in (DrafterKind.MODEL, DrafterKind.COMBINED):
        parser.error(
            f"argument --drafter: {choice!r} needs a draft model; it conflicts with --no-draft"
        )
    return drafter
