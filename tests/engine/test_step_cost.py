"""Start-up timing of both models by batch shape, and its interpolation."""

from __future__ import annotations

import pytest
import torch

from server.engine.model_runner import ModelRunner
from server.engine.step_cost import StepCost, calibrate, powers_of_two_up_to
from tests.engine.helpers import BLOCK_SIZE, VOCAB_SIZE, make_engine
from tests.tiny import tiny_model


def test_interpolates_between_and_extrapolates_beyond_timed_sizes() -> None:
    cost = StepCost(target_points=((1, 1.0), (4, 1.0), (8, 3.0)), draft_points=((1, 0.5),))
    assert cost.target_s(1) == 1.0
    assert cost.target_s(2) == 1.0
    assert cost.target_s(6) == pytest.approx(2.0)
    assert cost.target_s(12) == pytest.approx(5.0)  # the last segment's slope, 0.5 per token
    assert cost.draft_s(0) == 0.0
    assert cost.draft_s(1) == 0.5
    assert cost.draft_s(3) == pytest.approx(1.5)  # one point: proportional to the rows


def test_rejects_points_out_of_order() -> None:
    with pytest.raises(ValueError, match="increasing sizes"):
        StepCost(target_points=((4, 1.0), (2, 1.0)), draft_points=((1, 0.1),))


def test_sizes_are_powers_of_two_ending_at_the_limit() -> None:
    assert powers_of_two_up_to(1) == [1]
    assert powers_of_two_up_to(8) == [1, 2, 4, 8]
    assert powers_of_two_up_to(28) == [1, 2, 4, 8, 16, 28]


def test_calibration_times_every_size_and_leaves_the_pools_as_they_were(tokenizer) -> None:
    target = tiny_model(VOCAB_SIZE, seed=0)
    draft = tiny_model(VOCAB_SIZE, seed=1)
    engine = make_engine(target, tokenizer, draft=draft, max_batch_size=3, max_draft_tokens=2)
    cost = calibrate(engine.target, engine.draft, max_tokens=9, max_rows=3)
    assert cost is not None
    assert [size for size, _ in cost.target_points] == [1, 2, 4, 8, 9]
    assert [size for size, _ in cost.draft_points] == [1, 2, 3]
    assert all(seconds > 0 for _, seconds in cost.target_points + cost.draft_points)
    for runner in (engine.target, engine.draft):
        assert runner.allocator.num_used == 0
        assert runner.num_computed_tokens == 0  # calibration is not counted as served work


def test_engine_calibrates_when_asked(tokenizer) -> None:
    target = tiny_model(VOCAB_SIZE, seed=0)
    assert make_engine(target, tokenizer).step_cost is None
    engine = make_engine(target, tokenizer, batch_aware_draft=True, max_batch_size=2)
    assert engine.step_cost is not None
    assert engine.step_cost.target_points[-1][0] == 2 * (engine.config.max_draft_tokens + 1)


def test_a_pool_too_small_to_calibrate_gives_none() -> None:
    model = tiny_model(VOCAB_SIZE, seed=0)
    runner = ModelRunner(model, kv_cache_bytes=1, block_size=BLOCK_SIZE, device=torch.device("cpu"))
    assert calibrate(runner, None, max_tokens=8, max_rows=1) is None
