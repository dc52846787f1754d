"""A request's life inside the engine: its tokens, KV block tables, random stream and statistics."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from models.kv_cache import BlockTable
from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.params import DrafterKind, FinishReason, SamplingParams

# Pseudo-observations behind the prior acceptance, so a request's first steps do not swing it.
PRIOR_TRIALS = 4.0


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class SpecStats:
    """Speculation counters, per request and summed over the engine."""

    num_steps: int = 0  # target forwards that produced tokens for this request
    num_drafts: int = 0  # steps that verified at least one draft token
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per drafting step: 1 + accepted / drafting steps."""
        return 1 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 1.0

    def record(self, num_drafted: int, num_accepted: int) -> None:
        self.num_steps += 1
        if num_drafted == 0:
            return
        self.num_drafts += 1
        self.num_draft_tokens += num_drafted
        self.num_accepted_tokens += num_accepted
        grow = num_drafted - len(self.drafted_per_position)
        if grow > 0:
            self.drafted_per_position += [0] * grow
            self.accepted_per_position += [0] * grow
        for position in range(num_drafted):
            self.drafted_per_position[position] += 1
            self.accepted_per_position[position] += position < num_accepted

    def merge(self, other: SpecStats) -> None:
        self.num_steps += other.num_steps
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        for mine, theirs in (
            (self.accepted_per_position, other.accepted_per_position),
            (self.drafted_per_position, other.drafted_per_position),
        ):
            mine += [0] * (len(theirs) - len(mine))
            for i, count in enumerate(theirs):
                mine[i] += count
        self.draft_time_s += other.draft_time_s
        self.verify_time_s += other.verify_time_s

    def as_dict(self) -> dict[str, object]:
        return {
            "drafted_tokens": self.num_draft_tokens,
            "accepted_tokens": self.num_accepted_tokens,
            "draft_steps": self.num_drafts,
            "target_steps": self.num_steps,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_acceptance_length": round(self.mean_acceptance_length, 4),
            "accepted_per_position": list(self.accepted_per_position),
            "drafted_per_position": list(self.drafted_per_position),
            "draft_time_s": round(self.draft_time_s, 4),
            "verify_time_s": round(self.verify_time_s, 4),
        }


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


class Sequence:
    """One request being generated. `token_ids` holds the prompt followed by the output.

    Invariant between steps: the target has cached every token but the last one, which is the
    input of its next forward; the draft has cached a prefix of that and catches up when it next
    drafts.
    """

    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        sampling: SamplingParams,
        drafter: DrafterKind,
        fixed_num_draft: int | None,
        detokenizer: IncrementalDetokenizer,
        target_table: BlockTable,
        draft_table: BlockTable | None,
        prior_acceptance: float,
    ) -> None:
        self.request_id = request_id
        self.token_ids = list(prompt_ids)
        self.num_prompt_tokens = len(prompt_ids)
        self.sampling = sampling
        self.drafter = drafter
        self.fixed_num_draft = fixed_num_draft
        self.detokenizer = detokenizer
        self.target_table = target_table
        self.draft_table = draft_table
        self.status = SeqStatus.WAITING
        self.finish_reason: FinishReason | None = None
        # Decayed counts of accepted drafts and of drafts tested, seeded with the prior.
        self.accept_successes = prior_acceptance * PRIOR_TRIALS
        self.accept_trials = PRIOR_TRIALS
        self.stats = SpecStats()
        self.logprobs: list[TokenLogprob] = []
        self.num_cached_prompt_tokens = 0
        self.num_emitted_tokens = 0  # output tokens already reported to the caller
        self.arrival_s = time.perf_counter()
        self.first_token_s: float | None = None
        self.generator = torch.Generator()
        if sampling.seed is not None:
            self.generator.manual_seed(sampling.seed)
        else:
            self.generator.seed()

    @property
    def acceptance_estimate(self) -> float:
        """Estimated probability that the next draft token is accepted."""
        return self.accept_successes / self.accept_trials

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    def uniforms(self, count: int) -> torch.Tensor:
        """`count` float32 uniforms in [0, 1) from this request's own stream."""
        return torch.rand(count, generator=self.generator)
