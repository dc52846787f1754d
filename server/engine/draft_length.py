"""How many tokens to draft for a sequence this step.

With per-token acceptance probability a and a draft costing c target steps per token, a step that
drafts k tokens emits (1 - a^(k+1)) / (1 - a) tokens on average and costs k c + 1 target steps
(Leviathan et al. 2023, section 3.4). The adaptive rule picks the k in [1, k_max] maximising that
ratio, with `a` estimated per request from its own recent steps.
"""

from __future__ import annotations

from server.engine.params import DrafterKind, EngineConfig
from server.engine.sequence import Sequence


def expected_tokens(acceptance: float, num_draft: int) -> float:
    """Expected tokens emitted by one step that drafts `num_draft` tokens."""
    if acceptance >= 1.0:
        return num_draft + 1.0
    return (1 - acceptance ** (num_draft + 1)) / (1 - acceptance)


def best_num_draft(acceptance: float, cost_ratio: float, max_draft: int) -> int:
    """The k in [1, max_draft] with the highest expected tokens per unit of cost."""
    return max(
        range(1, max_draft + 1),
        key=lambda k: expected_tokens(acceptance, k) / (k * cost_ratio + 1),
    )


def choose_num_draft(seq: Sequence, config: EngineConfig, max_context: int) -> int:
    """Draft tokens for this step: 0 without speculation, never past max_tokens or the context."""
    if seq.drafter is DrafterKind.NONE:
        return 0
    # The verify step always adds one token of its own after the accepted drafts.
    room = min(
        seq.sampling.max_tokens - seq.num_output_tokens - 1,
        max_context - seq.num_tokens - 1,
    )
    if seq.fixed_num_draft is not None:
        wanted = seq.fixed_num_draft
    elif seq.drafter is DrafterKind.NGRAM:
        wanted = config.max_draft_tokens  # lookup is free: draft as far as it matches
    else:
        wanted = best_num_draft(
            seq.acceptance_estimate, config.draft_cost_ratio, config.max_draft_tokens
        )
    return max(0, min(wanted, room))


def update_acceptance(
    seq: Sequence, config: EngineConfig, num_drafted: int, num_accepted: int
) -> None:
    """Fold one step into the request's acceptance estimate.

    A step that accepted a of k drafts saw a successes and, when a < k, one failure (drafts after
    the first rejection were never tested). The estimate is successes over trials, both decayed
    by `1 - acceptance_smoothing` per step so that recent text counts most.
    """
    failures = 1 if num_accepted < num_drafted else 0
    decay = 1 - config.acceptance_smoothing
    seq.accept_successes = decay * seq.accept_successes + num_accepted
    seq.accept_trials = decay * seq.accept_trials + num_accepted + failures
