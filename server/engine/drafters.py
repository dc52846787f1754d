"""Where draft tokens come from: the small draft model, or prompt lookup (n-gram copying).

Every drafter returns, per sequence, the proposed token ids and, for sampled requests, the draft
distribution each was drawn from ([V] rows over the target's vocabulary), which rejection sampling
needs. Prompt lookup proposes deterministically, so its distribution is a one-hot row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from server.engine.model_runner import ForwardItem, ModelRunner
from server.engine.sampling import SamplingBatch
from server.engine.sequence import Sequence


@dataclass
class Proposal:
    """Draft tokens for one sequence; `probs` [len(token_ids), V] only for sampled requests."""

    token_ids: list[int]
    probs: torch.Tensor | None = None


def find_ngram_continuation(
    token_ids: list[int], num_tokens: int, ngram_max: int, ngram_min: int
) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier match of the text's last n-gram.

    Tries the longest n first (a longer match predicts better), and the most recent match, which
    in code and edits is usually the passage being repeated.
    """
    length = len(token_ids)
    for n in range(min(ngram_max, length - 1), ngram_min - 1, -1):
        tail = token_ids[length - n :]
        # Scan backwards over earlier windows; the window ending at the tail itself is excluded.
        for start in range(length - n - 1, -1, -1):
            if token_ids[start : start + n] == tail:
                continuation = token_ids[start + n : start + n + num_tokens]
                if continuation:
                    return continuation
    return []


def one_hot_probs(token_ids: list[int], vocab_size: int) -> torch.Tensor:
    """[len(token_ids), V] rows with all mass on the proposed token."""
    probs = torch.zeros(len(token_ids), vocab_size)
    probs[torch.arange(len(token_ids)), torch.tensor(token_ids, dtype=torch.long)] = 1.0
    return probs


class ModelDrafter:
    """Autoregressive proposals from the draft model, one batched forward per draft position."""

    def __init__(
        self, runner: ModelRunner, target_vocab_size: int, confidence_threshold: float
    ) -> None:
        self.runner = runner
        self.target_vocab_size = target_vocab_size
        self.confidence_threshold = confidence_threshold
        head_ids = runner.model.head_token_ids
        self.head_token_ids = None if head_ids is None else head_ids.to(runner.device)

    def propose(self, seqs: list[Sequence], num_draft: list[int]) -> list[Proposal]:
        """Propose up to `num_draft[i]` tokens for `seqs[i]`, fewer once the draft is unsure."""
        proposals = [Proposal([]) for _ in seqs]
        prob_rows: list[list[torch.Tensor]] = [[] for _ in seqs]
        # The first forward also catches the draft's cache up with tokens it has not seen.
        active = [i for i, k in enumerate(num_draft) if k > 0]
        items = [self._catch_up_item(seqs[i]) for i in active]
        while active:
            logits = torch.cat(self.runner.forward(items))  # [len(active), V_head]
            tokens, probs, confidence = self._pick(logits, [seqs[i] for i in active])
            still_active = []
            for row, i in enumerate(active):
                proposals[i].token_ids.append(tokens[row])
                if probs is not None:
                    prob_rows[i].append(probs[row])
                done = len(proposals[i].token_ids) >= num_draft[i]
                if not done and confidence[row] >= self.confidence_threshold:
                    still_active.append(i)
            active = still_active
            items = [
                ForwardItem(seqs[i].draft_table, [proposals[i].token_ids[-1]], 1) for i in active
            ]
        for i, rows in enumerate(prob_rows):
            if rows:
                proposals[i].probs = torch.stack(rows)
        return proposals

    @staticmethod
    def _catch_up_item(seq: Sequence) -> ForwardItem:
        assert seq.draft_table is not None
        return ForwardItem(seq.draft_table, seq.token_ids[seq.draft_table.num_tokens :], 1)

    def _pick(
        self, logits: torch.Tensor, seqs: list[Sequence]
    ) -> tuple[list[int], torch.Tensor | None, list[float]]:
        """Choose one token per row of draft logits [R, V_head].

        Returns token ids (in the full vocabulary), the draft distributions over the target's
        vocabulary for sampled rows (None when every row is greedy), and the draft's confidence.
        """
        logits = self._full_vocab_logits(logits)  # [R, V_target]
        batch = SamplingBatch.from_params([seq.sampling for seq in seqs], logits.device)
        probs = batch.probs(logits)  # greedy rows hold the plain softmax
        tokens = batch.choose(logits, probs, [seq.uniforms(1) for seq in seqs])
        confidence = probs.max(dim=-1).values.tolist()
        return tokens, (None if batch.all_greedy else probs), confidence

    def _full_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Map draft logits [R, V_head] onto the target's vocabulary [R, V_target].

        Ids the draft cannot score (outside a restricted head, or past the draft's own vocabulary)
        get -inf: the draft never proposes them, and its probability for them is zero.
        """
        if self.head_token_ids is None and logits.shape[-1] == self.target_vocab_size:
            return logits
        full = torch.full(
            (logits.shape[0], self.target_vocab_size), -math.inf, device=logits.device
        )
        if self.head_token_ids is None:
            width = min(logits.shape[-1], self.target_vocab_size)
            full[:, :width] = logits[:, :width]
        else:
            keep = self.head_token_ids < self.target_vocab_size
            full[:, self.head_token_ids[keep]] = logits[:, keep]
        return full
