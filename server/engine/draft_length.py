"""How many tokens to draft for a sequence this step.

With per-token acceptance probability a and a draft costing c target steps per token, a step that
drafts k tokens emits (1 - a^(k+1)) / (1 - a) tokens on average and costs k c + 1 target steps
(Leviathan et al. 2023, section 3.4). The adaptive rule picks the k in [1, k_max] maximising that
ratio, with `a` estimated per request from its own recent steps.
"""

from __future__ import annotations

from server.engine.params import DrafterKind, EngineConfig
from server.engine.sequence import Sequence
from server.engine.step_cost import StepCost


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


def cap_for_batch(
    wanted: list[int],
    acceptance: list[float],
    uses_model: list[bool],
    may_cap: list[bool],
    cost: StepCost,
) -> list[int]:
    """Draft lengths for one batched step: each `wanted[i]`, capped where `may_cap[i]` at the
    common cap with the most expected tokens per second for the whole batch.

    A step costs one draft forward per draft position over the sequences still drafting there
    (only `uses_model` ones: prompt lookup is free) plus one target forward over every sequence's
    drafts and its own next token. Sequence i emits `expected_tokens(acceptance[i], k_i)`. Cap 0
    is plain decoding, which a batch that already fills the target's flat region can prefer.
    """
    best_plan, best_rate = wanted, 0.0
    # Ascending caps with a strict comparison: a tie keeps the cheaper, shorter plan.
    for cap in range(max(wanted, default=0) + 1):
        plan = [min(k, cap) if capped else k for k, capped in zip(wanted, may_cap, strict=True)]
        tokens = sum(expected_tokens(a, k) for a, k in zip(acceptance, plan, strict=True))
        rate = tokens / _step_seconds(plan, uses_model, cost)
        if rate > best_rate:
            best_plan, best_rate = plan, rate
    return best_plan


def _step_seconds(plan: list[int], uses_model: list[bool], cost: StepCost) -> float:
    draft_s = sum(
        cost.draft_s(sum(1 for k, model in zip(plan, uses_model, strict=True) if model and k > j))
        for j in range(max(plan, default=0))
    )
    return draft_s + cost.target_s(sum(plan) + len(plan))


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
