"""Sampled speculative decoding must follow the target's distribution exactly.

The first token of a request comes from the prefill (the target alone); the second is the first
token a speculative step emits. Its marginal over the first token is computed exactly from the
target, and 20,000 speculative samples are compared with it by a chi-square test.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import kernels
from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind, SamplingParams, SpecParams
from tests.engine.helpers import VOCAB_SIZE, make_engine, shifted_head_copy
from tests.models.test_transformer import SequenceRunner
from tests.tiny import tiny_model

NUM_SAMPLES = 20_000
BATCH = 1_000
NUM_DRAFT = 3
PROMPT = [40, 41, 42, 43, 44]
P_VALUE_FLOOR = 1e-3
MIN_EXPECTED = 5.0  # chi-square needs this many expected counts per bin
KV_BYTES = 64 << 20  # room for a whole batch of requests at once


@pytest.fixture(scope="module")
def target():
    # A sharp head, so top-p and top-k leave a handful of tokens.
    return tiny_model(VOCAB_SIZE, seed=11, head_scale=12.0)


@pytest.fixture(scope="module")
def near_draft():
    return tiny_model(VOCAB_SIZE, seed=12, head_scale=12.0)


def transformed(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """The shared transform for one set of parameters; logits [R, V] -> probs [R, V]."""
    rows = logits.shape[0]
    return kernels.logits_to_probs(
        logits,
        torch.full((rows,), sampling.temperature),
        torch.full((rows,), sampling.top_k, dtype=torch.long),
        torch.full((rows,), sampling.top_p),
        torch.full((rows,), sampling.min_p),
    )


def second_token_law(target, sampling: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact P(second token) = sum_t1 P(t1) P(t2 | t1), and the support of P(t2 | t1) per t1."""
    runner = SequenceRunner(target)
    (first_logits,) = runner.forward([runner.new_table()], [PROMPT], all_logits=False)
    first = transformed(first_logits, sampling)[0]  # [V]
    firsts = first.nonzero().flatten().tolist()
    tables = [runner.new_table() for _ in firsts]
    logits = runner.forward(tables, [PROMPT + [t] for t in firsts], all_logits=False)
    second = transformed(torch.cat(logits), sampling)  # [len(firsts), V]
    support = torch.zeros(VOCAB_SIZE, VOCAB_SIZE, dtype=torch.bool)
    support[firsts] = second > 0
    return (first[firsts, None] * second).sum(0), support


def sample_pairs(engine: LLMEngine, sampling: SamplingParams) -> list[tuple[int, int]]:
    """(first, second) output tokens of NUM_SAMPLES requests, each with its own seed."""
    pairs = []
    spec = SpecParams(drafter=DrafterKind.MODEL, num_draft_tokens=NUM_DRAFT)
    for start in range(0, NUM_SAMPLES, BATCH):
        seqs = [
            engine.add_request(
                f"s{i}", PROMPT, SamplingParams(**{**sampling.__dict__, "seed": i}), spec
            )
            for i in range(start, start + BATCH)
        ]
        while engine.has_unfinished():
            engine.step()
        pairs += [tuple(seq.output_ids[:2]) for seq in seqs]
    return pairs


def chi_square_p(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs.double() * observed.sum()
    big = expected >= MIN_EXPECTED
    obs = torch.cat([observed[big].double(), observed[~big].sum().double().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    exp = exp * obs.sum() / exp.sum()
    return float(stats.chisquare(obs.numpy(), exp.numpy()).pvalue)


SETTINGS = [
    SamplingParams(max_tokens=2 + NUM_DRAFT, temperature=0.7, top_p=0.9, ignore_eos=True),
    SamplingParams(max_tokens=2 + NUM_DRAFT, temperature=1.3, top_k=5, ignore_eos=True),
]


CASES = [
    pytest.param(SETTINGS[0], "near", id="t0.7-top_p0.9-near-draft"),
    pytest.param(SETTINGS[1], "near", id="t1.3-top_k5-near-draft"),
    pytest.param(SETTINGS[0], "far", id="t0.7-top_p0.9-far-draft"),
]


@pytest.mark.parametrize(("sampling", "draft_kind"), CASES)
def test_second_token_follows_the_target(target, near_draft, tokenizer, sampling, draft_kind):
    draft = near_draft if draft_kind == "near" else shifted_head_copy(target)
    engine = make_engine(
        target, tokenizer, draft=draft, max_batch_size=BATCH, kv_cache_bytes=KV_BYTES
    )
    law, support = second_token_law(target, sampling)

    pairs = sample_pairs(engine, sampling)
    observed = torch.bincount(torch.tensor([p[1] for p in pairs]), minlength=VOCAB_SIZE)
    assert chi_square_p(observed, law) > P_VALUE_FLOOR
    # Never a token outside the top-p / top-k set of its context.
    assert all(support[first, second] for first, second in pairs)
    assert engine.totals.spec.num_draft_tokens > 0
    assert engine.totals.num_preempted == 0
