"""`python -m server`: load the models, build the engine and serve the OpenAI-compatible API."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import torch
import uvicorn

from server.api.app import create_app
from server.api.config import ServedModels
from server.cli import LaunchConfig, parse_args
from server.engine.engine import LLMEngine
from server.engine.loading import LoadedPair, build_engine, load_pair, resolve_device

logger = logging.getLogger("server")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Seconds uvicorn lets open requests finish after Ctrl-C before closing them.
GRACEFUL_SHUTDOWN_S = 5
BYTES_PER_MIB = 1 << 20
PARAMS_PER_BILLION = 1e9
PARAMS_PER_MILLION = 1e6
EXIT_USAGE = 2
# Shell convention for "stopped by SIGINT".
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.server.log_level.upper(), format=LOG_FORMAT)
    try:
        return _serve(config)
    except KeyboardInterrupt:
        logger.info("interrupted")
        return EXIT_INTERRUPTED


def _serve(config: LaunchConfig) -> int:
    device = resolve_device(config.load.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        logger.error("--device %s: no CUDA device is available", config.load.device)
        return EXIT_USAGE
    try:
        pair = load_pair(
            config.load.target,
            config.load.draft,
            config.load.torch_dtype,
            device,
            config.load.draft_options(device),
        )
        models = ServedModels(
            pair.target_name, pair.draft_name, config.default_model, config.routing is not None
        )
    except (OSError, ValueError) as error:
        logger.error(
            "cannot serve --target %s --draft %s: %s", config.load.target, config.load.draft, error
        )
        return EXIT_USAGE
    engine = build_engine(pair, config.engine)
    _log_summary(config, pair, engine, device)
    app = create_app(engine, models, config.server, router_config=config.routing)
    uvicorn.run(
        app,
        host=config.server.host,
        port=config.server.port,
        log_level=config.server.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0


def _log_summary(
    config: LaunchConfig, pair: LoadedPair, engine: LLMEngine, device: torch.device
) -> None:
    """The start-up summary: models, precision, KV cache, speculation and address."""
    draft = "none"
    if pair.draft is not None:
        draft = f"{pair.draft_name} ({_parameter_count(pair.draft)} params)"
    logger.info(
        "models: target %s (%s params), draft %s; loaded in %.1f s",
        pair.target_name,
        _parameter_count(pair.target),
        draft,
        pair.load_s,
    )
    runners = [engine.target] + ([engine.draft] if engine.draft is not None else [])
    kv_mib = sum(runner.pool.nbytes for runner in runners) / BYTES_PER_MIB
    logger.info(
        "dtype %s on %s; KV cache %d blocks of %d tokens, %.0f MiB; context %d tokens",
        config.load.dtype,
        device,
        engine.target.allocator.num_blocks,
        engine.config.block_size,
        kv_mib,
        engine.max_context,
    )
    logger.info(
        "drafter %s, k up to %d%s; batch up to %d, queue up to %d; prefix cache %s",
        engine.config.drafter.value,
        engine.config.max_draft_tokens,
        " (batch-aware)" if engine.step_cost is not None else "",
        engine.config.max_batch_size,
        config.server.max_queued,
        "on" if engine.config.enable_prefix_cache else "off",
    )
    if config.routing is not None:
        escalation = config.routing.escalation
        logger.info(
            "routing: small tier %s alone, auto below score %.2f, escalation %s; default model %s",
            pair.draft_name,
            config.routing.threshold,
            "off" if escalation is None else f"below {escalation.stat} {escalation.threshold:.2f}",
            config.default_model or pair.target_name,
        )
    logger.info("listening on http://%s:%d", config.server.host, config.server.port)


def _parameter_count(model: torch.nn.Module) -> str:
    """`1.54B` or `494.0M` (tied embeddings counted once)."""
    count = sum(param.numel() for param in model.parameters())
    if count >= PARAMS_PER_BILLION:
        return f"{count / PARAMS_PER_BILLION:.2f}B"
    return f"{count / PARAMS_PER_MILLION:.1f}M"


if __name__ == "__main__":
    sys.exit(main())
