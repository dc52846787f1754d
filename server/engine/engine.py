"""The engine: admits requests, runs prefill and speculative decode steps, and reports tokens.

Each call to `step` does one of two things for the sequences it schedules:
- prefill: the target computes the KV of newly admitted prompts and samples their first token;
- decode: the drafter proposes up to k tokens per sequence (one batched draft forward per draft
  position), the target verifies every sequence's tokens in one flattened forward, the acceptance
  kernel keeps a prefix plus one target token, and both KV caches are rolled back to what was kept.
Plain target decoding is the same step with zero draft tokens.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from models.kv_cache import BlockTable, OutOfBlocksError
from models.transformer import Transformer
from server.caches.prefix_cache import PrefixCache
from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.draft_length import cap_for_batch, choose_num_draft, update_acceptance
from server.engine.drafters import ModelDrafter, Proposal, find_ngram_continuation
from server.engine.model_runner import ForwardItem, ModelRunner
from server.engine.params import (
    DrafterKind,
    EngineConfig,
    FinishReason,
    SamplingParams,
    SpecParams,
)
from server.engine.sampling import SamplingBatch
from server.engine.sequence import SeqStatus, Sequence, SpecStats, TokenLogprob
from server.engine.speculative import Verdict, accept
from server.engine.step_cost import StepCost, calibrate

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the engine cannot serve as given (the message says why)."""


@dataclass(frozen=True)
class RequestOutput:
    """What a request gained in one step (deltas), and its totals so far."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    new_logprobs: list[TokenLogprob]
    finished: bool
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    stats: SpecStats
    first_token_s: float | None


@dataclass
class EngineTotals:
    """Engine-wide counters since start."""

    spec: SpecStats = field(default_factory=SpecStats)
    # Prompt tokens the target computed; those reused from the prefix cache are not counted.
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_finished: int = 0
    num_preempted: int = 0
    # Prefix cache, in target tokens (vLLM's counting): looked up at admission, and reused.
    num_prefix_cache_queries: int = 0
    num_prefix_cache_hits: int = 0


class LLMEngine:
    """Continuous-batching speculative decoding over a target and an optional draft model."""

    def __init__(
        self,
        target: Transformer,
        tokenizer: PreTrainedTokenizerBase,
        eos_token_ids: Iterable[int],
        config: EngineConfig,
        draft: Transformer | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        device = target.embed_tokens.weight.device
        self.device = device
        target_share, draft_share = _split_budget(target, draft, config.kv_cache_bytes)
        self.target = ModelRunner(target, target_share, config.block_size, device)
        self.draft: ModelRunner | None = None
        self.drafter: ModelDrafter | None = None
        if draft is not None:
            self.draft = ModelRunner(draft, draft_share, config.block_size, device)
            self.drafter = ModelDrafter(
                self.draft, target.vocab_size, config.draft_confidence_threshold
            )
        # Without a draft model, requests that name no drafter decode with the target alone.
        needs_model = config.drafter in (DrafterKind.MODEL, DrafterKind.COMBINED)
        self.default_drafter = DrafterKind.NONE if needs_model and not draft else config.drafter
        limits = [target.config.max_context] + ([draft.config.max_context] if draft else [])
        self.max_context = min([config.max_context or min(limits)] + limits)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.totals = EngineTotals()
        self._num_generated_batches = 0
        # One prefix cache per pool, salted by role so the pools' keys never meet; None: off.
        self.target_prefixes: PrefixCache | None = None
        self.draft_prefixes: PrefixCache | None = None
        if config.enable_prefix_cache:
            self.target_prefixes = _prefix_cache(self.target, "target")
            if self.draft is not None:
                self.draft_prefixes = _prefix_cache(self.draft, "draft")
        # Measured forward costs by batch shape, for draft lengths that suit the whole batch.
        self.step_cost: StepCost | None = None
        if config.batch_aware_draft:
            self.step_cost = calibrate(
                self.target,
                self.draft,
                max_tokens=config.max_batch_size * (config.max_draft_tokens + 1),
                max_rows=config.max_batch_size,
            )

    # ----------------------------------------------------------------- requests

    def add_request(
        self,
        request_id: str,
        prompt_ids: list[int],
        sampling: SamplingParams,
        spec: SpecParams | None = None,
    ) -> Sequence:
        """Queue a request; raises RequestError if it can never be served."""
        spec = spec or SpecParams()
        drafter = spec.drafter or self.default_drafter
        if drafter in (DrafterKind.MODEL, DrafterKind.COMBINED) and self.draft is None:
            raise RequestError(f"drafter {drafter.value!r} needs a draft model; none is loaded")
        self._check_length(len(prompt_ids), sampling.max_tokens)
        seq = Sequence(
            request_id=request_id,
            prompt_ids=prompt_ids,
            sampling=sampling,
            drafter=drafter,
            fixed_num_draft=spec.num_draft_tokens,
            detokenizer=IncrementalDetokenizer(self.tokenizer, prompt_ids, sampling.stop),
            target_table=self.target.new_table(),
            draft_table=self.draft.new_table() if self.draft else None,
            prior_acceptance=self.config.prior_acceptance,
        )
        self.waiting.append(seq)
        return seq

    def _check_length(self, num_prompt: int, max_tokens: int) -> None:
        if num_prompt == 0:
            raise RequestError("the prompt is empty")
        if num_prompt + max_tokens > self.max_context:
            raise RequestError(
                f"prompt ({num_prompt} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"context length of {self.max_context} tokens"
            )
        blocks = -(-(num_prompt + max_tokens) // self.config.block_size)
        if blocks > self.target.allocator.num_blocks:
            raise RequestError(
                f"prompt plus max_tokens needs {blocks} KV blocks; the cache holds "
                f"{self.target.allocator.num_blocks}"
            )

    def abort(self, request_id: str) -> RequestOutput | None:
        """Cancel a request, freeing its KV blocks at once."""
        for queue in (self.waiting, self.running):
            for seq in queue:
                if seq.request_id == request_id:
                    queue.remove(seq)
                    self._finish(seq, FinishReason.ABORT)
                    return self._output(seq)
        return None

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ----------------------------------------------------------------- steps

    def step(self) -> list[RequestOutput]:
        """Run one prefill or decode step; return outputs of every request that changed."""
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
            touched = admitted
        elif self.running:
            touched = list(self.running)
            self._decode(touched)
        else:
            return []
        outputs = [self._output(seq) for seq in touched]
        self.running = [seq for seq in self.running if not seq.is_finished]
        return outputs

    def _admit(self) -> list[Sequence]:
        """Move waiting requests to running while batch slots, KV blocks and the budget allow."""
        admitted: list[Sequence] = []
        budget = self.config.max_prefill_tokens
        runners = [self.target] + ([self.draft] if self.draft else [])
        # Blocks the sequences admitted so far will still allocate, per pool. `num_free` counts
        # idle cached blocks as free (they are evictable), and a reused block already left that
        # count when it was retained, so only blocks yet to allocate are charged here.
        pending = [0] * len(runners)
        while self.waiting and len(self.running) < self.config.max_batch_size:
            seq = self.waiting[0]
            num_reused = self._attach_cached_prefix(seq)
            # Room for the prompt and one full speculative step after it.
            lookahead = seq.num_tokens + self.config.max_draft_tokens + 1
            to_allocate = [
                max(self._table(seq, runner).blocks_needed(lookahead), 0) for runner in runners
            ]
            fits = all(
                p + n <= r.allocator.num_free
                for p, n, r in zip(pending, to_allocate, runners, strict=True)
            )
            num_to_compute = seq.num_tokens - num_reused
            if not fits or (admitted and num_to_compute > budget):
                self._detach_cached_prefix(seq)
                break
            budget -= num_to_compute
            pending = [p + n for p, n in zip(pending, to_allocate, strict=True)]
            self._count_prefix_hits(seq, num_reused)
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _prefill(self, seqs: list[Sequence]) -> None:
        items = []
        for seq in seqs:
            # A fresh prompt is computed and its first token sampled; a sequence resumed after
            # preemption already has its next token, so everything before it is recomputed. Both
            # start after the blocks reused from the prefix cache, if any.
            fresh = seq.num_output_tokens == 0
            tokens = seq.token_ids[seq.target_table.num_tokens : self._prefill_end(seq)]
            items.append(ForwardItem(seq.target_table, tokens, 1 if fresh else 0))
        logits = self.target.forward(items)
        self.totals.num_prompt_tokens += sum(len(item.token_ids) for item in items)
        for seq in seqs:
            self._register_final_blocks(seq)

        fresh_rows = [(seq, rows) for seq, rows in zip(seqs, logits, strict=True) if rows.numel()]
        if not fresh_rows:
            return
        chosen = [seq for seq, _ in fresh_rows]
        first_logits = torch.cat([rows for _, rows in fresh_rows])  # [R, V]
        batch = SamplingBatch.from_params([seq.sampling for seq in chosen], self.device)
        probs = batch.probs(first_logits)
        tokens = batch.choose(first_logits, probs, [seq.uniforms(1) for seq in chosen])
        for row, (seq, token) in enumerate(zip(chosen, tokens, strict=True)):
            seq.first_token_s = time.perf_counter()
            self._commit(seq, Verdict([token], 0), first_logits[row : row + 1], num_drafted=0)

    def _decode(self, seqs: list[Sequence]) -> None:
        num_draft = [choose_num_draft(seq, self.config, self.max_context) for seq in seqs]
        lookups = self._look_up(seqs, num_draft)
        num_draft = [
            k if found is None else len(found) for k, found in zip(num_draft, lookups, strict=True)
        ]
        if self.step_cost is not None and len(seqs) > 1:
            num_draft = self._fit_to_batch(seqs, num_draft, lookups, self.step_cost)
        self._make_room(seqs, num_draft)
        seqs = [seq for seq in seqs if seq.status is SeqStatus.RUNNING]
        num_draft, lookups = num_draft[: len(seqs)], lookups[: len(seqs)]

        started = time.perf_counter()
        proposals = self._propose(seqs, num_draft, lookups)
        drafted_at = time.perf_counter()
        items = [
            ForwardItem(seq.target_table, [seq.token_ids[-1]] + p.token_ids, len(p.token_ids) + 1)
            for seq, p in zip(seqs, proposals, strict=True)
        ]
        target_logits = self.target.forward(items)
        verdicts = accept(seqs, proposals, target_logits)
        verified_at = time.perf_counter()

        for seq, proposal, verdict, logits in zip(
            seqs, proposals, verdicts, target_logits, strict=True
        ):
            seq.stats.draft_time_s += drafted_at - started
            seq.stats.verify_time_s += verified_at - drafted_at
            self._commit(seq, verdict, logits, num_drafted=len(proposal.token_ids))
        self.totals.spec.draft_time_s += drafted_at - started
        self.totals.spec.verify_time_s += verified_at - drafted_at

    def _look_up(self, seqs: list[Sequence], num_draft: list[int]) -> list[list[int] | None]:
        """Prompt-lookup drafts per sequence; None where the draft model is to propose instead."""
        lookups: list[list[int] | None] = []
        for seq, k in zip(seqs, num_draft, strict=True):
            if k == 0:
                lookups.append([])
            elif seq.drafter is DrafterKind.MODEL:
                lookups.append(None)
            else:
                found = find_ngram_continuation(
                    seq.token_ids, k, self.config.ngram_max, self.config.ngram_min
                )
                falls_back = not found and seq.drafter is DrafterKind.COMBINED
                lookups.append(None if falls_back else found)
        return lookups

    @staticmethod
    def _fit_to_batch(
        seqs: list[Sequence],
        num_draft: list[int],
        lookups: list[list[int] | None],
        step_cost: StepCost,
    ) -> list[int]:
        """Cap draft lengths where the batch as a whole gains more from shorter drafts.

        Requests with a fixed k keep it, and so do seeded sampled requests: their drafts draw
        from their own random stream, so capping by batch would let other requests change them.
        Greedy output does not depend on k at all.
        """
        may_cap = [
            seq.fixed_num_draft is None and (seq.sampling.greedy or seq.sampling.seed is None)
            for seq in seqs
        ]
        return cap_for_batch(
            wanted=num_draft,
            acceptance=[seq.acceptance_estimate for seq in seqs],
            uses_model=[found is None for found in lookups],
            may_cap=may_cap,
            cost=step_cost,
        )

    def _propose(
        self, seqs: list[Sequence], num_draft: list[int], lookups: list[list[int] | None]
    ) -> list[Proposal]:
        """Lookups cut to this step's length; the draft model for the rows without one."""
        proposals = [
            Proposal([] if found is None else found[:k])
            for found, k in zip(lookups, num_draft, strict=True)
        ]
        model_rows = [i for i, found in enumerate(lookups) if found is None and num_draft[i] > 0]
        if model_rows and self.drafter is not None:
            drafted = self.drafter.propose(
                [seqs[i] for i in model_rows], [num_draft[i] for i in model_rows]
            )
            for i, proposal in zip(model_rows, drafted, strict=True):
                proposals[i] = proposal
        return proposals

    def _make_room(self, seqs: list[Sequence], num_draft: list[int]) -> None:
        """Preempt the newest sequences until every remaining one has blocks for its step."""
        runners = [self.target] + ([self.draft] if self.draft else [])
        # Blocks each sequence needs this step, per model: its tokens plus the drafts and one more.
        needs = [
            [
                max(self._table(seq, runner).blocks_needed(seq.num_tokens + k + 1), 0)
                for runner in runners
            ]
            for seq, k in zip(seqs, num_draft, strict=True)
        ]
        totals = [sum(column) for column in zip(*needs, strict=True)]
        live = len(seqs)
        while any(t > r.allocator.num_free for t, r in zip(totals, runners, strict=True)):
            if live <= 1:
                raise OutOfBlocksError("KV cache too small for a single sequence's next step")
            live -= 1
            totals = [t - n for t, n in zip(totals, needs[live], strict=True)]
            self._preempt(seqs[live])

    def _table(self, seq: Sequence, runner: ModelRunner) -> BlockTable:
        table = seq.target_table if runner is self.target else seq.draft_table
        assert table is not None
        return table

    def _preempt(self, seq: Sequence) -> None:
        """Free a sequence's KV and queue it first; it is recomputed when resources allow."""
        logger.info("preempting %s to free KV blocks", seq.request_id)
        seq.target_table.free(self.target.allocator)
        if self.draft is not None and seq.draft_table is not None:
            seq.draft_table.free(self.draft.allocator)
        seq.status = SeqStatus.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        self.totals.num_preempted += 1

    # ----------------------------------------------------------------- bookkeeping

    def _commit(
        self, seq: Sequence, verdict: Verdict, target_logits: torch.Tensor, num_drafted: int
    ) -> None:
        """Append kept tokens one by one (stopping where a stop condition hits) and roll back.

        target_logits: [>= len(verdict.token_ids), V], the target's scores behind each token.
        """
        num_kept = 0
        for position, token in enumerate(verdict.token_ids):
            seq.token_ids.append(token)
            num_kept += 1
            if seq.sampling.logprobs is not None:
                seq.logprobs.append(_logprob(target_logits[position], token, seq.sampling.logprobs))
            reason = self._stop_reason(seq, token)
            if reason is not None:
                self._finish(seq, reason)
                break
        if num_drafted:
            update_acceptance(seq, self.config, num_drafted, verdict.num_accepted)
        seq.stats.record(num_drafted, min(verdict.num_accepted, num_kept))
        self.totals.spec.record(num_drafted, min(verdict.num_accepted, num_kept))
        self.totals.num_generated_tokens += num_kept
        if not seq.is_finished:
            self._roll_back(seq)

    def _stop_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        sampling = seq.sampling
        if token in self.eos_token_ids and not sampling.ignore_eos:
            return FinishReason.STOP
        if token in sampling.stop_token_ids:
            return FinishReason.STOP
        if seq.detokenizer.add(token):
            return FinishReason.STOP
        if seq.num_output_tokens >= sampling.max_tokens or seq.num_tokens >= self.max_context:
            return FinishReason.LENGTH
        return None

    def _roll_back(self, seq: Sequence) -> None:
        """Keep exactly the KV of accepted tokens: all but the newest token, which is not cached."""
        keep = seq.num_tokens - 1
        seq.target_table.truncate(min(seq.target_table.num_tokens, keep), self.target.allocator)
        if self.draft is not None and seq.draft_table is not None:
            seq.draft_table.truncate(min(seq.draft_table.num_tokens, keep), self.draft.allocator)
        self._register_final_blocks(seq)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.detokenizer.flush()
        # A finished answer's blocks are what the next turn of a conversation reuses. Aborts
        # skip this: they can come after a failed step whose KV writes never happened, and the
        # blocks keyed by earlier steps stay cached anyway.
        if reason is not FinishReason.ABORT:
            self._register_final_blocks(seq)
        seq.target_table.free(self.target.allocator)
        if self.draft is not None and seq.draft_table is not None:
            seq.draft_table.free(self.draft.allocator)
        self.totals.num_finished += 1

    def _output(self, seq: Sequence) -> RequestOutput:
        new_ids = seq.output_ids[seq.num_emitted_tokens :]
        new_logprobs = seq.logprobs[seq.num_emitted_tokens :] if seq.logprobs else []
        seq.num_emitted_tokens = seq.num_output_tokens
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new_ids,
            new_text=seq.detokenizer.release(final=seq.is_finished),
            new_logprobs=new_logprobs,
            finished=seq.is_finished,
            finish_reason=seq.finish_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=seq.num_cached_prompt_tokens,
            stats=seq.stats,
            first_token_s=seq.first_token_s,
        )

    # ----------------------------------------------------------------- prefix cache

    def _attach_cached_prefix(self, seq: Sequence) -> int:
        """Give a waiting sequence's empty tables their cached prefix; return target tokens reused.

        At least one token is left to compute: a fresh prompt's last token, whose logits give the
        first output token, or (resumed after preemption) the token before the newest one.
        """
        if self.target_prefixes is None or not seq.sampling.use_prefix_cache:
            return 0
        max_reuse = self._prefill_end(seq) - 1
        num_reused = self.target_prefixes.attach_prefix(seq.target_table, seq.token_ids, max_reuse)
        # The draft catches up lazily when it drafts; only sequences it drafts for need its KV.
        uses_draft = seq.drafter in (DrafterKind.MODEL, DrafterKind.COMBINED)
        if self.draft_prefixes is not None and seq.draft_table is not None and uses_draft:
            self.draft_prefixes.attach_prefix(seq.draft_table, seq.token_ids, max_reuse)
        return num_reused

    def _detach_cached_prefix(self, seq: Sequence) -> None:
        """Undo `_attach_cached_prefix` for a sequence that stays waiting."""
        seq.target_table.free(self.target.allocator)
        if self.draft is not None and seq.draft_table is not None:
            seq.draft_table.free(self.draft.allocator)

    def _count_prefix_hits(self, seq: Sequence, num_reused: int) -> None:
        if self.target_prefixes is None or not seq.sampling.use_prefix_cache:
            return
        self.totals.num_prefix_cache_queries += self._prefill_end(seq)
        self.totals.num_prefix_cache_hits += num_reused
        if seq.num_output_tokens == 0:  # a resumed sequence keeps its first admission's count
            seq.num_cached_prompt_tokens = num_reused

    def _register_final_blocks(self, seq: Sequence) -> None:
        """Key the full blocks of both tables whose tokens are all accepted (see prefix_cache).

        Every position below `num_tokens - 1` holds the KV of an accepted token in any table
        that reaches it: the verify and draft forwards fed exactly the kept tokens up to there.
        """
        if not seq.sampling.use_prefix_cache:
            return
        num_final = seq.num_tokens - 1
        if self.target_prefixes is not None:
            self.target_prefixes.register_final_blocks(seq.target_table, seq.token_ids, num_final)
        if self.draft_prefixes is not None and seq.draft_table is not None:
            self.draft_prefixes.register_final_blocks(seq.draft_table, seq.token_ids, num_final)

    @staticmethod
    def _prefill_end(seq: Sequence) -> int:
        """Tokens the target must hold after prefill: the prompt, or all but the newest token."""
        return seq.num_tokens if seq.num_output_tokens == 0 else seq.num_tokens - 1

    # ----------------------------------------------------------------- convenience

    def generate(
        self,
        prompts: list[list[int]],
        sampling: SamplingParams,
        spec: SpecParams | None = None,
    ) -> list[GenerationResult]:
        """Run prompts to completion (for tests, the bench and scripts)."""
        seqs = [
            self.add_request(f"gen-{i}-{id(p)}", p, sampling, spec) for i, p in enumerate(prompts)
        ]
        texts = {seq.request_id: "" for seq in seqs}
        while self.has_unfinished():
            for out in self.step():
                texts[out.request_id] += out.new_text
        return [
            GenerationResult(
                token_ids=seq.output_ids,
                text=texts[seq.request_id],
                finish_reason=seq.finish_reason,
                stats=seq.stats,
            )
            for seq in seqs
        ]


@dataclass(frozen=True)
class GenerationResult:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None
    stats: SpecStats


def _logprob(logits: torch.Tensor, token: int, num_top: int) -> TokenLogprob:
    """The target's log-probability of `token` and its `num_top` best alternatives; logits: [V]."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top = []
    if num_top:
        values, ids = logprobs.topk(num_top)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), top)


def _prefix_cache(runner: ModelRunner, role: str) -> PrefixCache:
    """A prefix cache over one runner's pool, salted by the model's identity and its role."""
    model = runner.model
    salt = f"{role}|{model.config!r}|{model.embed_tokens.weight.dtype}"
    return PrefixCache(runner.allocator, runner.block_size, salt)


def _split_budget(
    target: Transformer, draft: Transformer | None, budget_bytes: int
) -> tuple[int, int]:
    """Share the KV budget so that both pools hold the same number of tokens."""
    if draft is None:
        return budget_bytes, 0

    def per_token(model: Transformer) -> int:
        config = model.config
        element = model.embed_tokens.weight.element_size()
        return 2 * config.num_layers * config.num_kv_heads * config.head_dim * element

    target_bytes, draft_bytes = per_token(target), per_token(draft)
    target_share = budget_bytes * target_bytes // (target_bytes + draft_bytes)
    return target_share, budget_bytes - target_share
