"""Command-line parsing: defaults, frozen configs, and usage errors that name the option."""

from __future__ import annotations

import dataclasses

import pytest

from server.cli import BYTES_PER_GIB, DEFAULT_DRAFT, DEFAULT_TARGET, parse_args
from server.engine.params import DrafterKind

USAGE_ERROR = 2


def test_defaults() -> None:
    config = parse_args([])
    assert config.load.target == DEFAULT_TARGET
    assert config.load.draft == DEFAULT_DRAFT
    assert config.load.dtype == "bf16"
    assert config.load.device == "auto"
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8000
    assert config.engine.drafter is DrafterKind.COMBINED
    assert config.engine.enable_prefix_cache
    assert not config.engine.batch_aware_draft
    assert config.default_model is None


def test_options_reach_the_configs() -> None:
    config = parse_args(
        [
            "--target", "big.gguf", "--draft", "small.gguf", "--dtype", "fp32",
            "--device", "cpu", "--kv-cache-gb", "0.5", "--drafter", "combined", "--k", "4",
            "--max-batch-size", "8", "--max-queued", "3", "--max-context", "2048",
            "--host", "0.0.0.0", "--port", "9001", "--log-level", "debug",
            "--no-prefix-cache", "--response-cache-size", "100", "--default-model", "big",
            "--batch-aware-draft",
        ]
    )  # fmt: skip
    assert (config.load.target, config.load.draft) == ("big.gguf", "small.gguf")
    assert config.load.dtype == "fp32"
    assert config.engine.kv_cache_bytes == BYTES_PER_GIB // 2
    assert config.engine.drafter is DrafterKind.COMBINED
    assert config.engine.max_draft_tokens == 4
    assert config.engine.max_batch_size == 8
    assert config.engine.max_context == 2048
    assert not config.engine.enable_prefix_cache
    assert config.engine.batch_aware_draft
    assert config.server.max_queued == 3
    assert config.server.response_cache_size == 100
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9001)
    assert config.server.log_level == "debug"
    assert config.default_model == "big"


def test_no_draft_defaults_to_plain_decoding() -> None:
    config = parse_args(["--no-draft"])
    assert config.load.draft is None
    assert config.engine.drafter is DrafterKind.NONE
    assert parse_args(["--no-draft", "--drafter", "ngram"]).engine.drafter is DrafterKind.NGRAM


def test_configs_are_frozen() -> None:
    config = parse_args([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--k", "0"], "--k"),
        (["--k", "99"], "--k"),
        (["--port", "http"], "--port"),
        (["--port", "70000"], "--port"),
        (["--kv-cache-gb", "-1"], "--kv-cache-gb"),
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-queued", "0"], "--max-queued"),
        (["--response-cache-size", "-5"], "--response-cache-size"),
        (["--dtype", "int4"], "--dtype"),
        (["--device", "tpu"], "--device"),
        (["--drafter", "oracle"], "--drafter"),
        (["--no-draft", "--drafter", "model"], "--drafter"),
        (["--no-draft", "--draft", "x"], "--draft"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == USAGE_ERROR
    error = capsys.readouterr().err
    assert option in error
    assert "Traceback" not in error
