"""Shared test inputs (sweep shapes, padded draft counts) and the defined view of kernel outputs.

Triton's interpreter runs each program in Python, so the sweep pairs every batch size with every
vocabulary size (none a power of two; 5003 spans several kernel chunks) and gives each pair two
draft lengths, K and 9 - K, so that every K from 1 to 8 occurs without running the full product.
"""

import itertools

import torch

BATCH_SIZES = (1, 3, 8)
VOCAB_SIZES = (37, 1000, 5003)
MAX_DRAFT_LENGTH = 8


def _sweep() -> list[tuple[int, int, int]]:
    cases = []
    pairs = itertools.product(BATCH_SIZES, VOCAB_SIZES)
    for index, (batch_size, vocab_size) in enumerate(pairs):
        short = 1 + index % MAX_DRAFT_LENGTH
        for max_draft_tokens in (short, MAX_DRAFT_LENGTH + 1 - short):
            cases.append((batch_size, max_draft_tokens, vocab_size))
    return cases


# (B, K, V) triples.
SWEEP = _sweep()


def random_draft_counts(
    batch_size: int, max_draft_tokens: int, generator: torch.Generator
) -> torch.Tensor:
    """[B] int64 counts in [0, K]; the first sequence drafts K tokens and the last (if another)
    drafts none, so both ends occur in every case."""
    counts = torch.randint(0, max_draft_tokens + 1, (batch_size,), generator=generator)
    counts[0] = max_draft_tokens
    if batch_size > 1:
        counts[-1] = 0
    return counts


def case_id(case: tuple[int, int, int]) -> str:
    batch_size, max_draft_tokens, vocab_size = case
    return f"B{batch_size}-K{max_draft_tokens}-V{vocab_size}"


def emitted(output_token_ids: torch.Tensor, num_accepted: torch.Tensor) -> list[list[int]]:
    """The defined part of each [K+1] output row: accepted tokens plus the token after them."""
    rows = zip(output_token_ids.tolist(), num_accepted.tolist(), strict=True)
    return [row[: count + 1] for row, count in rows]
