"""Per-row sampling settings for a batch of sequences, applied through the shared transform."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import kernels
from server.engine.params import SamplingParams


@dataclass(frozen=True)
class SamplingBatch:
    """Sampling settings of R rows (one per sequence, or per checked position)."""

    temperature: torch.Tensor  # [R] float32; rows with 0 are greedy
    top_k: torch.Tensor  # [R] int64; 0 keeps every token
    top_p: torch.Tensor  # [R] float32
    min_p: torch.Tensor  # [R] float32
    greedy: tuple[bool, ...]

    @classmethod
    def from_params(cls, params: list[SamplingParams], device: torch.device) -> SamplingBatch:
        return cls(
            temperature=torch.tensor([p.temperature for p in params], device=device),
            top_k=torch.tensor([p.top_k for p in params], device=device, dtype=torch.long),
            top_p=torch.tensor([p.top_p for p in params], device=device),
            min_p=torch.tensor([p.min_p for p in params], device=device),
            greedy=tuple(p.greedy for p in params),
        )

    @property
    def all_greedy(self) -> bool:
        return all(self.greedy)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """[R, V] probabilities: the transformed distribution; plain softmax for greedy rows."""
        if self.all_greedy:
            return torch.softmax(logits, dim=-1)
        # The transform needs a positive temperature; greedy rows are replaced just below.
        temperature = torch.where(self.temperature > 0, self.temperature, 1.0)
        probs = kernels.logits_to_probs(logits, temperature, self.top_k, self.top_p, self.min_p)
        if any(self.greedy):
            rows = torch.tensor(self.greedy, device=logits.device)
            probs[rows] = torch.softmax(logits[rows], dim=-1)
        return probs

    def choose(
        self, logits: torch.Tensor, probs: torch.Tensor, uniforms: list[torch.Tensor]
    ) -> list[int]:
        """One token per row: argmax for greedy rows, an inverse-CDF draw for the others.

        logits, probs: [R, V]; uniforms: R tensors [1], drawn from each request's own stream.
        """
        tokens = logits.argmax(dim=-1)
        if not self.all_greedy:
            drawn = kernels.sample_from_probs(probs, torch.cat(uniforms).to(probs.device))
            sampled_rows = ~torch.tensor(self.greedy, device=logits.device)
            tokens = torch.where(sampled_rows, drawn, tokens)
        return tokens.tolist()
