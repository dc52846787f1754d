"""Command-line flags of the caches, carried into the configuration objects."""

from __future__ import annotations

import pytest

from server.cli import BYTES_PER_MIB, parse_args


def test_cache_flags_reach_the_configs() -> None:
    config = parse_args(
        ["--no-prefix-cache", "--response-cache-size", "32", "--response-cache-mb", "8"]
    )
    assert config.engine.enable_prefix_cache is False
    assert config.server.response_cache_size == 32
    assert config.server.response_cache_bytes == 8 * BYTES_PER_MIB


def test_defaults_keep_both_caches_on() -> None:
    config = parse_args([])
    assert config.engine.enable_prefix_cache is True
    assert config.server.response_cache_size > 0
    assert config.server.response_cache_bytes > 0


def test_a_zero_size_turns_the_response_cache_off() -> None:
    assert parse_args(["--response-cache-size", "0"]).server.response_cache_size == 0


def test_a_non_positive_byte_bound_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--response-cache-mb", "0"])
    assert "--response-cache-mb" in capsys.readouterr().err
