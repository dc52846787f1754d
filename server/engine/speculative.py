"""The acceptance step of speculative decoding for a batch of sequences.

Terms, after Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative Decoding")
and Chen et al. 2023 ("Accelerating LLM Decoding with Speculative Sampling"):
- draft tokens: the k_i tokens proposed for sequence i this step;
- accepted tokens: the longest prefix of them the target agrees with (greedy: equal to its
  argmax; sampled: kept with probability min(1, p_target / p_draft));
- recovered token: at the first rejection, a token drawn from normalize(max(0, p_target - p_draft))
  (greedy: the target's argmax);
- bonus token: when every draft token is accepted, one more token from the target's distribution
  at the next position, which the verify forward computed anyway.
Each step therefore emits between 1 and k_i + 1 tokens per sequence, and the emitted tokens are
distributed exactly as if the target had produced them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import kernels
from server.engine.drafters import Proposal, one_hot_probs
from server.engine.sampling import SamplingBatch
from server.engine.sequence import Sequence


@dataclass(frozen=True)
class Verdict:
    """What one sequence keeps from a step: accepted drafts followed by one target token."""

    token_ids: list[int]
    num_accepted: int


def accept(
    seqs: list[Sequence],
    proposals: list[Proposal],
    target_logits: list[torch.Tensor],
) -> list[Verdict]:
    """Decide every sequence's emitted tokens from its proposal and its target logits.

    target_logits[i]: [k_i + 1, V], the target's scores at the last token and at each draft.
    Greedy and sampled sequences go to their own kernel; rows keep their order in the result.
    """
    greedy = [i for i, seq in enumerate(seqs) if seq.sampling.greedy]
    sampled = [i for i, seq in enumerate(seqs) if not seq.sampling.greedy]
    verdicts: list[Verdict | None] = [None] * len(seqs)
    if greedy:
        _fill(verdicts, greedy, _accept_greedy(proposals, target_logits, greedy))
    if sampled:
        _fill(verdicts, sampled, _accept_sampled(seqs, proposals, target_logits, sampled))
    return [v for v in verdicts if v is not None]


def _fill(verdicts: list[Verdict | None], rows: list[int], results: list[Verdict]) -> None:
    for row, verdict in zip(rows, results, strict=True):
        verdicts[row] = verdict


def _padded_drafts(
    proposals: list[Proposal], rows: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Draft ids [B, K] (zero-padded) and counts [B] for the chosen rows; K >= 1."""
    counts = [len(proposals[i].token_ids) for i in rows]
    width = max(max(counts), 1)
    draft_ids = torch.zeros(len(rows), width, dtype=torch.long)
    for b, i in enumerate(rows):
        draft_ids[b, : counts[b]] = torch.tensor(proposals[i].token_ids, dtype=torch.long)
    return draft_ids.to(device), torch.tensor(counts, device=device), width


def _padded_logits(target_logits: list[torch.Tensor], rows: list[int], width: int) -> torch.Tensor:
    """Stack per-sequence [k_i + 1, V] logits into [B, width + 1, V] (padding rows are zeros)."""
    vocab = target_logits[rows[0]].shape[-1]
    out = target_logits[rows[0]].new_zeros(len(rows), width + 1, vocab)
    for b, i in enumerate(rows):
        out[b, : target_logits[i].shape[0]] = target_logits[i]
    return out


def _verdicts(output_ids: torch.Tensor, num_accepted: torch.Tensor) -> list[Verdict]:
    verdicts = []
    for ids, count in zip(output_ids.tolist(), num_accepted.tolist(), strict=True):
        verdicts.append(Verdict(token_ids=ids[: count + 1], num_accepted=count))
    return verdicts


def _accept_greedy(
    proposals: list[Proposal], target_logits: list[torch.Tensor], rows: list[int]
) -> list[Verdict]:
    device = target_logits[rows[0]].device
    draft_ids, counts, width = _padded_drafts(proposals, rows, device)
    logits = _padded_logits(target_logits, rows, width)
    output_ids, num_accepted = kernels.greedy_accept(draft_ids, counts, logits)
    return _verdicts(output_ids, num_accepted)


def _accept_sampled(
    seqs: list[Sequence],
    proposals: list[Proposal],
    target_logits: list[torch.Tensor],
    rows: list[int],
) -> list[Verdict]:
    device = target_logits[rows[0]].device
    draft_ids, counts, width = _padded_drafts(proposals, rows, device)
    logits = _padded_logits(target_logits, rows, width)  # [B, K + 1, V]
    batch_size, num_positions, vocab = logits.shape

    # One shared transform (temperature, top-k, top-p, min-p) for every checked position.
    params = [seqs[i].sampling for i in rows for _ in range(num_positions)]
    target_probs = SamplingBatch.from_params(params, device).probs(logits.view(-1, vocab))
    target_probs = target_probs.view(batch_size, num_positions, vocab)

    draft_probs = torch.zeros(batch_size, width, vocab, device=device)
    for b, i in enumerate(rows):
        proposal = proposals[i]
        if not proposal.token_ids:
            continue
        probs = proposal.probs
        if probs is None:  # deterministic proposals (prompt lookup)
            probs = one_hot_probs(proposal.token_ids, vocab)
        draft_probs[b, : len(proposal.token_ids)] = probs.to(device)

    # Uniforms come from each request's own generator, so a seeded request does not depend on
    # which other requests share its batch.
    # Each draws as many as it has drafts, whatever the batch's padded width.
    accept_uniforms = torch.zeros(batch_size, width)
    recover_uniforms = torch.zeros(batch_size, width + 1)
    for b, i in enumerate(rows):
        count = len(proposals[i].token_ids)
        accept_uniforms[b, :count] = seqs[i].uniforms(count)
        recover_uniforms[b, : count + 1] = seqs[i].uniforms(count + 1)
    accept_uniforms, recover_uniforms = accept_uniforms.to(device), recover_uniforms.to(device)
    output_ids, num_accepted = kernels.rejection_sample(
        draft_ids, counts, draft_probs, target_probs, accept_uniforms, recover_uniforms
    )
    return _verdicts(output_ids, num_accepted)
