"""The small model's view of a prompt: how unsure it is, from one forward pass over the prompt.

Cost, per scored request: one prefill of at most `max_scored_tokens` prompt tokens (the last
ones) through the small model, in chunks of `chunk_tokens`, and no decode step. For the
Qwen2.5-Coder pair that is about a third of the target's own prefill of the same tokens (0.5B
against 1.5B parameters). It runs directly on the model with a scratch KV pool of its own (a few
MiB), so it shares no state with the engines; a lock lets one prompt use that pool at a time. The
engines do not reuse its KV: a request routed to the small model computes its prompt again.

Terms, in nats, at prompt positions i = 0 .. n-1 with next-token distribution p_i:
- entropy H_i = -sum_v p_i(v) log p_i(v): how spread the model's guess of what comes next is;
- surprisal S_i = -log p_i(x_{i+1}) for i < n-1: how unexpected the prompt's actual next token is.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.attention import AttentionBatch
from models.kv_cache import DEFAULT_BLOCK_SIZE, KVCacheSpec, KVPool
from models.transformer import Transformer

# The last prompt tokens scored: the question sits at the end of a prompt, and a bound keeps the
# cost of routing a long prompt at that of a short one.
DEFAULT_MAX_SCORED_TOKENS = 512
# Rows of logits per forward: 64 x 151,936 float32 logits are 39 MB, where one forward over the
# whole 512-token window would hold 311 MB at once.
DEFAULT_CHUNK_TOKENS = 64


@dataclass(frozen=True)
class PromptUncertainty:
    """How unsure the small model is about a prompt (all in nats)."""

    num_scored_tokens: int
    # Mean entropy H_i over positions 0 .. n-2 (those that predict a prompt token); 0 for n = 1.
    mean_entropy_nats: float
    # Mean surprisal S_i of prompt tokens 1 .. n-1 given what precedes them; 0 for n = 1.
    mean_surprisal_nats: float
    # H_{n-1}: how unsure the model is about the answer's first token.
    next_token_entropy_nats: float


class PromptScorer:
    """Scores prompts with one chunked forward of a model over a scratch KV pool of its own."""

    def __init__(
        self,
        model: Transformer,
        max_scored_tokens: int = DEFAULT_MAX_SCORED_TOKENS,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        if model.head_token_ids is not None:
            raise ValueError(
                "the scoring model's head keeps only some tokens; surprisal needs every token's "
                "probability (load the draft without --draft-head-tokens)"
            )
        if max_scored_tokens < 1 or chunk_tokens < 1:
            raise ValueError(
                f"max_scored_tokens and chunk_tokens must be positive, got {max_scored_tokens} "
                f"and {chunk_tokens}"
            )
        config = model.config
        self.model = model
        self.max_scored_tokens = min(max_scored_tokens, config.max_context)
        self.chunk_tokens = chunk_tokens
        self.device = model.embed_tokens.weight.device
        dtype = model.embed_tokens.weight.dtype
        spec = KVCacheSpec(
            config.num_layers, config.num_kv_heads, config.head_dim, dtype, block_size
        )
        num_blocks = -(-self.max_scored_tokens // block_size)
        self.pool = KVPool(spec, num_blocks, self.device)
        self._lock = threading.Lock()

    def score(self, prompt_ids: Sequence[int]) -> PromptUncertainty:
        """The small model's uncertainty over the last `max_scored_tokens` of the prompt."""
        token_ids = list(prompt_ids[-self.max_scored_tokens :])
        if not token_ids:
            raise ValueError("cannot score an empty prompt")
        with self._lock:
            entropies, surprisals = self._entropies_and_surprisals(token_ids)
        predicting = entropies[:-1]
        return PromptUncertainty(
            num_scored_tokens=len(token_ids),
            mean_entropy_nats=float(predicting.mean()) if predicting.numel() else 0.0,
            mean_surprisal_nats=float(surprisals.mean()) if surprisals.numel() else 0.0,
            next_token_entropy_nats=float(entropies[-1]),
        )

    @torch.inference_mode()
    def _entropies_and_surprisals(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """H_i at every position [n] and S_i of every token after the first [n - 1]."""
        entropies, surprisals = [], []
        for start in range(0, len(token_ids), self.chunk_tokens):
            end = min(start + self.chunk_tokens, len(token_ids))
            logprobs = torch.log_softmax(self._forward(token_ids, start, end), dim=-1)  # [C, V]
            entropies.append(torch.special.entr(logprobs.exp()).sum(dim=-1))  # [C]

            # Row j predicts token start + j + 1, which the last row of the prompt has not.
            next_ids = torch.tensor(
                token_ids[start + 1 : end + 1], dtype=torch.long, device=logprobs.device
            )
            rows = torch.arange(len(next_ids), device=logprobs.device)
            surprisals.append(-logprobs[rows, next_ids])
        return torch.cat(entropies).cpu(), torch.cat(surprisals).cpu()

    def _forward(self, token_ids: list[int], start: int, end: int) -> torch.Tensor:
        """Logits [end - start, V] of tokens start .. end-1, after the KV of those before start.

        The pool's blocks are used in order, so a token's KV slot is its position.
        """
        block_size = self.pool.spec.block_size
        num_blocks = -(-end // block_size)
        batch = AttentionBatch.build(
            slots=list(range(start, end)),
            query_lens=[end - start],
            context_lens=[end],
            block_ids=[list(range(num_blocks))],
            block_size=block_size,
            device=self.device,
        )
        return self.model(
            torch.tensor(token_ids[start:end], device=self.device),
            torch.arange(start, end, device=self.device),
            batch,
            self.pool,
            torch.arange(end - start, device=self.device),
        )
