"""GPU check: greedy equality and per-step engine overhead at real sizes with random weights.

Real weights do not travel to a GPU machine, so the models here have random weights with the
real shapes: a target shaped like Qwen2.5-7B and a draft like Qwen2.5-0.5B. Random models agree
on nothing, so acceptance is forced: an oracle drafter replays the target's own greedy output and
corrupts each proposal with probability 1 - alpha, after running the draft model for its real
cost. Each step's time is compared with the ideal, k draft forwards plus one verify forward timed
alone, so that what the engine adds per step is visible.

    python -m scripts.gpu_check [--alphas 0.5,0.8,0.95] [--k 4] [--tokens 128]
"""

from __future__ import annotations

import argparse
import random
import time
from functools import partial

import torch

from models.config import ModelConfig
from models.transformer import Transformer
from server.engine.drafters import Proposal
from server.engine.engine import LLMEngine
from server.engine.model_runner import ForwardItem
from server.engine.params import DrafterKind, EngineConfig, SamplingParams, SpecParams
from tests.tiny import tiny_tokenizer

QWEN_VOCAB = 152064
SHAPES = {
    # Qwen2.5-7B and Qwen2.5-0.5B, from their config.json files.
    "target-7b": dict(hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                      num_kv_heads=4, head_dim=128),
    "draft-0.5b": dict(hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
                       num_kv_heads=2, head_dim=64),
}  # fmt: skip
PROMPT_TOKENS = 256
FIRST_PROMPT_ID = 10
KV_BYTES = 8 << 30
WEIGHT_STD = 0.02


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> Transformer:
    config = ModelConfig(
        architecture="qwen2",
        vocab_size=QWEN_VOCAB,
        max_position_embeddings=4096,
        attention_bias=True,
        name=shape,
        **SHAPES[shape],
    )
    with torch.device(device):
        model = Transformer(config).to(dtype)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=WEIGHT_STD)
    for layer in model.layers:  # unit norms keep activations in range
        layer.input_layernorm.weight.data.fill_(1.0)
        layer.post_attention_layernorm.weight.data.fill_(1.0)
    model.norm.weight.data.fill_(1.0)
    return model.requires_grad_(False).eval()


class OracleEngine(LLMEngine):
    """Proposals from the draft model's real forwards, tokens from a known target output."""

    def __init__(self, *args, reference: list[int], alpha: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference, self.alpha, self.rng = reference, alpha, random.Random(0)

    def _propose(self, seqs, num_draft):
        proposals = super()._propose(seqs, num_draft)
        for seq, proposal in zip(seqs, proposals, strict=True):
            start = seq.num_output_tokens
            truth = self.reference[start : start + len(proposal.token_ids)]
            proposal.token_ids = [
                t if self.rng.random() < self.alpha else (t + 1) % QWEN_VOCAB for t in truth
            ]
        return [Proposal(p.token_ids) for p in proposals]


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def ideal_step_s(engine: LLMEngine, k: int, device: torch.device) -> tuple[float, float]:
    """One draft forward and one (k + 1)-token verify forward, each timed alone."""
    times = {}
    for name, runner, new in (("draft", engine.draft, 1), ("verify", engine.target, k + 1)):
        table = runner.new_table()
        runner.forward([ForwardItem(table, list(range(PROMPT_TOKENS)), 1)])
        samples = []
        step = [ForwardItem(table, [7] * new, new)]
        for _ in range(5):
            samples.append(timed(partial(runner.forward, step), device))
            table.truncate(PROMPT_TOKENS, runner.allocator)
        table.free(runner.allocator)
        times[name] = sorted(samples)[2]
    return times["draft"], times["verify"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="0.5,0.8,0.95")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    target = random_model("target-7b", device, dtype)
    draft = random_model("draft-0.5b", device, dtype)
    # Only ids matter here; the byte-level test tokenizer decodes unknown ids to nothing.
    tokenizer = tiny_tokenizer()
    config = EngineConfig(kv_cache_bytes=KV_BYTES, draft_confidence_threshold=0.0)
    prompt = list(range(FIRST_PROMPT_ID, FIRST_PROMPT_ID + PROMPT_TOKENS))
    sampling = SamplingParams(max_tokens=args.tokens, ignore_eos=True)

    plain = LLMEngine(target, tokenizer, set(), config, draft=draft)
    plain.generate([prompt], sampling, SpecParams(drafter=DrafterKind.NONE))  # warm-up
    target_s = timed(
        lambda: plain.generate([prompt], sampling, SpecParams(drafter=DrafterKind.NONE)), device
    )
    (reference,) = plain.generate([prompt], sampling, SpecParams(drafter=DrafterKind.NONE))
    (speculative,) = plain.generate([prompt], sampling, SpecParams(num_draft_tokens=args.k))
    print(f"device {device}, greedy equal on random weights: "
          f"{speculative.token_ids == reference.token_ids}")  # fmt: skip
    draft_s, verify_s = ideal_step_s(plain, args.k, device)
    print(f"target-only: {args.tokens / target_s:.1f} tok/s; draft forward {draft_s * 1e3:.2f} ms, "
          f"verify of {args.k + 1} tokens {verify_s * 1e3:.2f} ms")  # fmt: skip
    print(f"{'alpha':>6} {'tok/s':>8} {'speedup':>8} {'tokens/step':>12} {'step ms':>8} "
          f"{'ideal ms':>9} {'overhead':>9}")  # fmt: skip
    for alpha in (float(a) for a in args.alphas.split(",")):
        engine = OracleEngine(
            target, tokenizer, set(), config, draft=draft, reference=reference.token_ids,
            alpha=alpha,
        )  # fmt: skip
        run = partial(engine.generate, [prompt], sampling, SpecParams(num_draft_tokens=args.k))
        outputs: list = []
        elapsed = timed(lambda run=run, outputs=outputs: outputs.extend(run()), device)
        result = outputs[0]
        stats = result.stats
        if result.token_ids != reference.token_ids:
            print(f"  alpha {alpha}: output differs from target-only (bf16 rounding on a near tie)")
        step_ms = elapsed / stats.num_steps * 1e3
        ideal_ms = (args.k * draft_s + verify_s) * 1e3
        print(f"{alpha:>6.2f} {args.tokens / elapsed:>8.1f} {target_s / elapsed:>8.2f} "
              f"{args.tokens / stats.num_steps:>12.2f} {step_ms:>8.2f} {ideal_ms:>9.2f} "
              f"{step_ms / ideal_ms:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
