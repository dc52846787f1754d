"""Our decoder against transformers' own implementation, on tiny random configs in float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from models.checkpoint import load_checkpoint
from models.kv_cache import BlockTable, KVCacheSpec
from models.transformer import Linear, Transformer, build_model
from server.engine.model_runner import ForwardItem, ModelRunner
from tests.conftest import make_tiny_hf_checkpoint
from tests.tiny import ours_from_hf, tiny_hf_model

TOLERANCE = 1e-4
BLOCK_SIZE = 4  # small, so that short test sequences span several blocks


class SequenceRunner:
    """Feeds sequences through a model by hand, as the engine does, for tests."""

    def __init__(self, model: Transformer, num_blocks: int = 64) -> None:
        config = model.config
        spec = KVCacheSpec(
            config.num_layers, config.num_kv_heads, config.head_dim, torch.float32, BLOCK_SIZE
        )
        self.runner = ModelRunner(
            model, num_blocks * spec.bytes_per_block, BLOCK_SIZE, torch.device("cpu")
        )
        self.allocator = self.runner.allocator

    def new_table(self) -> BlockTable:
        return self.runner.new_table()

    def forward(
        self, tables: list[BlockTable], new_tokens: list[list[int]], all_logits: bool = True
    ) -> list[torch.Tensor]:
        """Append `new_tokens[i]` to sequence i; return logits [len(new_tokens[i]), V] for each."""
        items = [
            ForwardItem(table, tokens, len(tokens) if all_logits else 1)
            for table, tokens in zip(tables, new_tokens, strict=True)
        ]
        return self.runner.forward(items)


def hf_logits(hf_model: transformers.PreTrainedModel, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "mistral"])
def test_prefill_decode_verify_and_rollback_match_transformers(
    tmp_path: Path, architecture: str
) -> None:
    # Both sides load the same safetensors directory: transformers its way, ours through
    # load_checkpoint.
    model_dir = make_tiny_hf_checkpoint(tmp_path, architecture)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    checkpoint = load_checkpoint(model_dir, torch.float32)
    ours = build_model(checkpoint.config, checkpoint.state_dict, torch.float32, torch.device("cpu"))
    runner = SequenceRunner(ours)
    vocab_size = checkpoint.config.vocab_size
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab_size, (30,), generator=generator).tolist()
    table = runner.new_table()

    # Prefill 11 tokens, decode 3 one by one, verify 5 at once.
    (prefill,) = runner.forward([table], [tokens[:11]])
    assert (prefill - hf_logits(hf_model, tokens[:11])).abs().max() < TOLERANCE
    for n in range(11, 14):
        (step,) = runner.forward([table], [[tokens[n]]])
        assert (step[0] - hf_logits(hf_model, tokens[: n + 1])[-1]).abs().max() < TOLERANCE
    (verify,) = runner.forward([table], [tokens[14:19]])
    assert (verify - hf_logits(hf_model, tokens[:19])[14:19]).abs().max() < TOLERANCE

    # Roll back 4 of the 5 verified tokens (crossing a block boundary), then decode other tokens.
    table.truncate(15, runner.allocator)
    (redo,) = runner.forward([table], [tokens[20:23]])
    expected = hf_logits(hf_model, tokens[:15] + tokens[20:23])[15:18]
    assert (redo - expected).abs().max() < TOLERANCE


def test_batched_sequences_match_each_alone() -> None:
    hf_model = tiny_hf_model("qwen2", tie_word_embeddings=True)
    model = ours_from_hf(hf_model)
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 97, (n,), generator=generator).tolist() for n in (3, 9, 1, 17)]

    alone = []
    for prompt in prompts:
        runner = SequenceRunner(model)
        (logits,) = runner.forward([runner.new_table()], [prompt])
        alone.append(logits)

    runner = SequenceRunner(model)
    tables = [runner.new_table() for _ in prompts]
    together = runner.forward(tables, prompts)
    for a, b in zip(alone, together, strict=True):
        assert (a - b).abs().max() < TOLERANCE

    # A mixed step: one token for some sequences, several for another.
    steps = [[5], [6, 7, 8], [9], [10, 11]]
    mixed = runner.forward(tables, steps)
    for prompt, step, logits in zip(prompts, steps, mixed, strict=True):
        assert (logits - hf_logits(hf_model, prompt + step)[-len(step) :]).abs().max() < TOLERANCE


def test_only_requested_rows_are_scored() -> None:
    hf_model = tiny_hf_model("llama")
    runner = SequenceRunner(ours_from_hf(hf_model))
    tokens = [1, 2, 3, 4, 5, 6]
    (last,) = runner.forward([runner.new_table()], [tokens], all_logits=False)
    assert last.shape == (1, 97)
    assert (last[0] - hf_logits(hf_model, tokens)[-1]).abs().max() < TOLERANCE


def test_llama3_rope_scaling_matches_transformers() -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    hf_model = tiny_hf_model("llama", rope_scaling=scaling, rope_theta=500000.0)
    runner = SequenceRunner(ours_from_hf(hf_model))
    tokens = list(range(40))
    (logits,) = runner.forward([runner.new_table()], [tokens])
    assert (logits - hf_logits(hf_model, tokens)).abs().max() < TOLERANCE


def test_projection_rows_do_not_depend_on_how_many_share_the_call() -> None:
    """A single-token decode step and a verify step must round each row alike in bfloat16.

    Shapes of the 1.5B target's MLP. On CPUs whose one-row bfloat16 matmul takes its own kernel
    (this project's reference machine: a few outputs differ by one ulp), plain nn.Linear fails
    this; `Linear` never multiplies a lone row.
    """
    torch.manual_seed(0)
    for in_features, out_features in ((1536, 8960), (8960, 1536)):
        layer = Linear(in_features, out_features, bias=False).to(torch.bfloat16)
        x = torch.randn(8, in_features, dtype=torch.bfloat16)
        with torch.no_grad():
            reference = layer(x)
            for rows in range(1, 8):
                assert torch.equal(layer(x[:rows]), reference[:rows]), (in_features, rows)
