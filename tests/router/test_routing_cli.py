"""Routing options of `python -m server`, and the served model names they imply."""

from __future__ import annotations

import pytest
import torch

from server.api.config import ServedModels
from server.cli import parse_args
from server.router.config import RouterConfig
from server.router.escalation import EscalationConfig
from server.router.tiers import Tier

USAGE_ERROR = 2


def test_routing_is_off_by_default() -> None:
    config = parse_args([])
    assert config.routing is None


def test_routing_options_reach_the_router_config() -> None:
    config = parse_args(
        [
            "--routing", "--route-threshold", "0.35", "--route-weight", "bias=-1.5",
            "--route-weight", "simple_task=-4", "--route-scored-tokens", "128",
            "--escalation-threshold", "0.7", "--escalation-stat", "min", "--default-model", "auto",
        ]
    )  # fmt: skip
    routing = config.routing
    assert isinstance(routing, RouterConfig)
    assert routing.threshold == 0.35
    assert (routing.weights.bias, routing.weights.simple_task) == (-1.5, -4.0)
    assert routing.weights.code_task == RouterConfig().weights.code_task
    assert routing.max_scored_tokens == 128
    assert routing.escalation == EscalationConfig(0.7, "min")
    assert config.default_model == "auto"


def test_routing_keeps_the_drafts_full_head() -> None:
    config = parse_args(["--routing"])
    assert config.routing is not None and config.routing.escalation is None
    assert config.load.draft_options(torch.device("cpu")).head_tokens is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--routing", "--no-draft"], "--routing"),
        (["--routing", "--draft-head-tokens", "1000"], "--draft-head-tokens"),
        (["--route-threshold", "1.5"], "--route-threshold"),
        (["--escalation-threshold", "-0.1"], "--escalation-threshold"),
        (["--routing", "--route-weight", "bias"], "--route-weight"),
        (["--routing", "--route-weight", "charm=1"], "unknown routing weight"),
    ],
)
def test_bad_routing_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == USAGE_ERROR
    assert message in capsys.readouterr().err


def test_served_names_by_tier() -> None:
    routed = ServedModels("big", "little", routing=True)
    assert [routed.tier_of(name) for name in ("big", "large", "little", "small", "auto")] == [
        Tier.LARGE,
        Tier.LARGE,
        Tier.SMALL,
        Tier.SMALL,
        Tier.AUTO,
    ]
    assert routed.tier_of("other") is None
    plain = ServedModels("big", "little")
    assert plain.tier_of("little") is None and plain.tier_of("auto") is None
    assert plain.tier_of("large") is Tier.LARGE


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (lambda: ServedModels("big", None, routing=True), "none is loaded"),
        (lambda: ServedModels("big", "little", "little"), "only with routing"),
        (lambda: ServedModels("big", "little", "auto"), "not served"),
    ],
)
def test_inconsistent_models_are_refused(models, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models()
    assert ServedModels("big", "little", "auto", routing=True).default_name == "auto"
