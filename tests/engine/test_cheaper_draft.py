"""A cheaper draft (int8 weights, a trimmed head) changes acceptance, never the output."""

from __future__ import annotations

import copy

import pytest
import torch

from models.draft_vocab import frequent_token_ids, rank_tokens
from models.quantize import Int8Linear, quantize_int8
from server.engine.drafters import ModelDrafter
from server.engine.params import DrafterKind, SamplingParams, SpecParams
from tests.engine.helpers import VOCAB_SIZE, make_engine
from tests.engine.test_greedy import greedy, prompts
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def target():
    return tiny_model(VOCAB_SIZE, seed=0, head_scale=4.0)


@pytest.fixture(scope="module")
def reference(target, tokenizer) -> list[list[int]]:
    engine = make_engine(target, tokenizer)
    outs = engine.generate(prompts(4), greedy(), SpecParams(drafter=DrafterKind.NONE))
    return [out.token_ids for out in outs]


def test_int8_linear_matches_dequantized_weights() -> None:
    linear = torch.nn.Linear(64, 48, bias=True)
    quantized = Int8Linear(linear)
    x = torch.randn(5, 64)
    dequantized = quantized.weight_int8.float() * quantized.scales[:, None]
    expected = x @ dequantized.T + linear.bias
    assert torch.allclose(quantized(x), expected, atol=1e-5)
    # Per-channel int8 keeps the weights within half a step of their scale.
    assert (dequantized - linear.weight).abs().max() <= quantized.scales.max() / 2 + 1e-6


@pytest.mark.parametrize("batch_size", [1, 4])
def test_quantized_draft_keeps_greedy_output(target, tokenizer, reference, batch_size) -> None:
    draft = quantize_int8(copy.deepcopy(target))
    assert isinstance(draft.layers[0].mlp.down_proj, Int8Linear)
    engine = make_engine(target, tokenizer, draft=draft)
    outs = engine.generate(prompts(batch_size), greedy(), SpecParams(num_draft_tokens=4))
    assert [o.token_ids for o in outs] == reference[:batch_size]
    # A quantized copy of the target agrees with it almost always.
    assert engine.totals.spec.acceptance_rate > 0.5


def test_trimmed_head_never_proposes_outside_its_list(target, tokenizer, reference) -> None:
    keep = torch.arange(0, VOCAB_SIZE, 2)  # every even id
    draft = copy.deepcopy(target)
    draft.restrict_head(keep)
    engine = make_engine(target, tokenizer, draft=draft)
    proposed: list[int] = []
    propose = ModelDrafter.propose

    def recording(self, seqs, num_draft):
        proposals = propose(self, seqs, num_draft)
        proposed.extend(t for p in proposals for t in p.token_ids)
        return proposals

    ModelDrafter.propose = recording
    try:
        outs = engine.generate(prompts(4), greedy(), SpecParams(num_draft_tokens=3))
        sampled = engine.generate(
            prompts(2), SamplingParams(max_tokens=16, temperature=0.8, seed=1, ignore_eos=True)
        )
    finally:
        ModelDrafter.propose = propose
    assert [o.token_ids for o in outs] == reference
    assert proposed and all(t % 2 == 0 for t in proposed)
    assert all(len(o.token_ids) == 16 for o in sampled)


def test_combined_drafter_with_cheap_draft_keeps_greedy_output(target, tokenizer, reference):
    draft = copy.deepcopy(target)
    draft.restrict_head(torch.arange(VOCAB_SIZE - 50))
    quantize_int8(draft)
    engine = make_engine(target, tokenizer, draft=draft)
    spec = SpecParams(drafter=DrafterKind.COMBINED, num_draft_tokens=5)
    outs = engine.generate(prompts(4), greedy(), spec)
    assert [o.token_ids for o in outs] == reference


def test_frequent_tokens_rank_the_corpus_first_and_keep_specials(tokenizer, tmp_path) -> None:
    corpus = tmp_path / "corpus.py"
    corpus.write_text("aaaa bbb cc\n" * 10)
    ranking = rank_tokens(tokenizer, [corpus])
    assert ranking[0] == ord("a") and sorted(ranking) == list(range(len(tokenizer)))
    ids = frequent_token_ids(tokenizer, 3, tmp_path, VOCAB_SIZE, corpus=[corpus])
    assert set(ranking[:3]) <= set(ids.tolist())
    assert tokenizer.eos_token_id in ids.tolist()
    assert ids.tolist() == sorted(ids.tolist())
