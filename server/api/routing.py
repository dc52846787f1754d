"""Tiers over HTTP: which engine answers a request, its `routing` block, and escalation.

A request names a tier through its `model` field (see `ServedModels.tier_of`). `auto` requests are
scored by the router off the event loop, then run on the chosen tier's engine. A non-streaming
`auto` request answered by the small model may be redone by the large one when the small model's
confidence in its own answer is low (see `server.router.escalation`); a streamed answer cannot be
taken back, so it is never escalated.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from server.api.config import ServedModels
from server.api.generation import Generation
from server.api.request_schemas import ChatCompletionRequest, CompletionRequest, GenerationRequest
from server.api.response_schemas import RoutingInfo
from server.api.translate import EngineRequest, build_engine_request
from server.engine.async_engine import AsyncEngine
from server.engine.engine import LLMEngine
from server.engine.params import DrafterKind
from server.metrics import ServerMetrics
from server.router.escalation import EscalationConfig, answer_confidence
from server.router.policy import RouteDecision
from server.router.router import Router
from server.router.tiers import Tier

# Drafters that need the draft model behind the engine, which the small tier does not have.
DRAFT_MODEL_DRAFTERS = (DrafterKind.MODEL, DrafterKind.COMBINED)


@dataclass(frozen=True)
class SmallTier:
    """The draft model answering alone, and the router that sends `auto` requests to it."""

    engine: LLMEngine
    async_engine: AsyncEngine
    router: Router


@dataclass(frozen=True)
class TierPlan:
    """Where one request runs, and what its response says about routing."""

    tier: Tier
    engine_request: EngineRequest
    async_engine: AsyncEngine
    # None when the server does not route (no `routing` block in responses).
    routing: RoutingInfo | None
    # Whether the client asked for logprobs; escalation asks the engine for them regardless.
    want_logprobs: bool
    # Set when this is a small answer that may still be redone by the large model.
    escalation: EscalationConfig | None = None


def request_text(
    body: GenerationRequest, prompt_ids: list[int], tokenizer: PreTrainedTokenizerBase
) -> str:
    """The words the router reads: the last user message, or the completion prompt's text."""
    if isinstance(body, ChatCompletionRequest):
        users = [message.text for message in body.messages if message.role == "user"]
        return users[-1] if users else "\n".join(message.text for message in body.messages)
    if isinstance(body, CompletionRequest) and isinstance(body.prompt, str):
        return body.prompt
    return str(tokenizer.decode(prompt_ids))


class Tiers:
    """Plans requests onto the large engine or, with routing, the small one."""

    def __init__(
        self,
        models: ServedModels,
        large_engine: LLMEngine,
        large_async: AsyncEngine,
        metrics: ServerMetrics,
        small: SmallTier | None = None,
    ) -> None:
        if models.routing != (small is not None):
            raise ValueError("the small tier must be given exactly when routing is served")
        self.models = models
        self.large_engine = large_engine
        self.large_async = large_async
        self.metrics = metrics
        self.small = small

    async def plan(
        self, body: GenerationRequest, requested: Tier, prompt_ids: list[int], text: str
    ) -> TierPlan:
        """Choose the tier (scoring `auto` requests off the event loop) and build its request."""
        large_request = build_engine_request(
            body, self.models.target_name, prompt_ids, self.large_engine
        )
        if self.small is None:
            return TierPlan(
                Tier.LARGE, large_request, self.large_async, None, _wants_logprobs(large_request)
            )
        tier, decision = await self._choose(requested, large_request, text)
        self.metrics.count_routed(requested.value, tier.value)
        routing = _routing_info(requested, tier, decision)
        if tier is Tier.LARGE:
            return TierPlan(
                tier, large_request, self.large_async, routing, _wants_logprobs(large_request)
            )
        return self._small_plan(body, requested, prompt_ids, routing)

    async def _choose(
        self, requested: Tier, large_request: EngineRequest, text: str
    ) -> tuple[Tier, RouteDecision | None]:
        """The served tier; `auto` is scored, unless its drafter pins it to the large tier."""
        if requested is not Tier.AUTO:
            return requested, None
        if large_request.spec.drafter in DRAFT_MODEL_DRAFTERS:
            return Tier.LARGE, None
        max_tokens = large_request.sampling.max_tokens
        decision = await asyncio.to_thread(self._route, large_request.prompt_ids, text, max_tokens)
        return decision.tier, decision

    def _route(self, prompt_ids: list[int], text: str, max_tokens: int) -> RouteDecision:
        assert self.small is not None
        router = self.small.router
        assessment = router.assess(prompt_ids, text, max_tokens)
        decision = router.decide(assessment)
        self.metrics.observe_routing(decision.score, assessment.scoring_s)
        return decision

    def _small_plan(
        self, body: GenerationRequest, requested: Tier, prompt_ids: list[int], routing: RoutingInfo
    ) -> TierPlan:
        assert self.small is not None
        small_request = build_engine_request(
            body, self.models.model_name(Tier.SMALL), prompt_ids, self.small.engine
        )
        want_logprobs = _wants_logprobs(small_request)
        escalation = self.small.router.config.escalation
        if requested is not Tier.AUTO or body.stream or escalation is None:
            return TierPlan(
                Tier.SMALL, small_request, self.small.async_engine, routing, want_logprobs
            )
        # The answer's own token probabilities decide escalation: ask the engine for them.
        if small_request.sampling.logprobs is None:
            sampling = dataclasses.replace(small_request.sampling, logprobs=0)
            small_request = dataclasses.replace(small_request, sampling=sampling)
        return TierPlan(
            Tier.SMALL,
            small_request,
            self.small.async_engine,
            routing,
            want_logprobs,
            escalation,
        )

    def review(self, plan: TierPlan, generation: Generation, body: GenerationRequest) -> Review:
        """After a finished answer: its routing block, and the large tier's plan if it escalates.

        Only a small answer planned with escalation is reviewed; its confidence goes into the
        block whether or not it is redone.
        """
        escalation = plan.escalation
        if escalation is None or plan.routing is None or not generation.logprobs:
            return Review(plan.routing)
        confidence = answer_confidence(
            [entry.logprob for entry in generation.logprobs], escalation.stat
        )
        routing = plan.routing.model_copy(update={"confidence": confidence})
        if not escalation.should_escalate(confidence):
            return Review(routing)
        self.metrics.count_escalation()
        large_request = build_engine_request(
            body, self.models.target_name, plan.engine_request.prompt_ids, self.large_engine
        )
        escalated = routing.model_copy(update={"tier": Tier.LARGE.value, "escalated": True})
        retry = TierPlan(Tier.LARGE, large_request, self.large_async, escalated, plan.want_logprobs)
        return Review(routing, retry)


@dataclass(frozen=True)
class Review:
    """A finished answer's routing block, and where to redo it when it escalates."""

    routing: RoutingInfo | None
    escalate_to: TierPlan | None = None


def _wants_logprobs(request: EngineRequest) -> bool:
    return request.sampling.logprobs is not None


def _routing_info(requested: Tier, tier: Tier, decision: RouteDecision | None) -> RoutingInfo:
    return RoutingInfo(
        requested=requested.value,
        tier=tier.value,
        score=None if decision is None else decision.score,
        threshold=None if decision is None else decision.threshold,
        escalated=False,
    )
