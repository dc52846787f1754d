"""The prompt scorer against transformers' own forward of the same tiny model."""

from __future__ import annotations

import pytest
import torch

from server.router.uncertainty import PromptScorer, PromptUncertainty
from tests.tiny import ours_from_hf, tiny_hf_model

VOCAB_SIZE = 97
PROMPT = [5, 17, 42, 8, 8, 91, 3, 60, 12, 33, 7, 7, 7, 50, 21, 64, 2, 9, 88, 1]
TOLERANCE = 1e-4


def reference(hf_model: torch.nn.Module, token_ids: list[int]) -> PromptUncertainty:
    """Entropy and surprisal from one plain forward of the reference model."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([token_ids])).logits[0].float()  # [n, V]
    logprobs = torch.log_softmax(logits, dim=-1)
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)  # [n]
    next_ids = torch.tensor(token_ids[1:])
    surprisal = -logprobs[torch.arange(len(next_ids)), next_ids]  # [n - 1]
    return PromptUncertainty(
        num_scored_tokens=len(token_ids),
        mean_entropy_nats=float(entropy[:-1].mean()),
        mean_surprisal_nats=float(surprisal.mean()),
        next_token_entropy_nats=float(entropy[-1]),
    )


def assert_close(got: PromptUncertainty, want: PromptUncertainty) -> None:
    assert got.num_scored_tokens == want.num_scored_tokens
    assert got.mean_entropy_nats == pytest.approx(want.mean_entropy_nats, abs=TOLERANCE)
    assert got.mean_surprisal_nats == pytest.approx(want.mean_surprisal_nats, abs=TOLERANCE)
    assert got.next_token_entropy_nats == pytest.approx(want.next_token_entropy_nats, abs=TOLERANCE)


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    hf_model = tiny_hf_model("qwen2", vocab_size=VOCAB_SIZE, seed=3)
    return hf_model, ours_from_hf(hf_model)


@pytest.mark.parametrize("chunk_tokens", [64, 7, 1])
def test_matches_a_plain_forward_whatever_the_chunking(models, chunk_tokens: int) -> None:
    hf_model, ours = models
    scorer = PromptScorer(ours, max_scored_tokens=64, chunk_tokens=chunk_tokens, block_size=4)
    assert_close(scorer.score(PROMPT), reference(hf_model, PROMPT))


def test_scores_only_the_last_tokens_of_a_long_prompt(models) -> None:
    hf_model, ours = models
    scorer = PromptScorer(ours, max_scored_tokens=8, chunk_tokens=3, block_size=4)
    assert_close(scorer.score(PROMPT), reference(hf_model, PROMPT[-8:]))


def test_is_deterministic_and_reusable(models) -> None:
    _, ours = models
    scorer = PromptScorer(ours, max_scored_tokens=32, chunk_tokens=5, block_size=4)
    first = scorer.score(PROMPT)
    scorer.score(PROMPT[:5][::-1])  # another prompt in between overwrites the scratch pool
    assert scorer.score(PROMPT) == first


def test_a_one_token_prompt_has_only_the_next_token_entropy(models) -> None:
    hf_model, ours = models
    scored = PromptScorer(ours).score([11])
    assert (scored.mean_entropy_nats, scored.mean_surprisal_nats) == (0.0, 0.0)
    assert scored.next_token_entropy_nats == pytest.approx(
        reference(hf_model, [11, 11]).mean_entropy_nats, abs=TOLERANCE
    )


def test_refuses_a_restricted_head() -> None:
    model = ours_from_hf(tiny_hf_model("qwen2", vocab_size=VOCAB_SIZE))
    model.restrict_head(torch.arange(10))
    with pytest.raises(ValueError, match="full head|every token"):
        PromptScorer(model)
