"""The endpoints: OpenAI-compatible generation, the model list, health and metrics."""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from transformers import PreTrainedTokenizerBase

from server.api.config import ServedModels, ServerConfig
from server.api.formatting import ResponseContext, chat_response, completion_response
from server.api.generation import (
    ClientDisconnected,
    Generation,
    GenerationStream,
    OutputSource,
    ReplayedGeneration,
)
from server.api.request_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from server.api.response_schemas import ModelCard, ModelList, ModelRole
from server.api.routing import TierPlan, Tiers, request_text
from server.api.streaming import (
    MEDIA_TYPE,
    STREAM_HEADERS,
    ChatChunks,
    ChunkFormat,
    CompletionChunks,
    sse_events,
)
from server.api.translate import (
    chat_prompt_ids,
    check_supported,
    completion_prompt_ids,
    resolve_model,
)
from server.caches.response_cache import CachedResponse, ResponseCache, response_key
from server.engine.async_engine import AsyncEngine
from server.engine.engine import LLMEngine
from server.metrics import CONTENT_TYPE, ServerMetrics
from server.router.tiers import Tier

# nginx's status for "client closed the request": logged and counted, never seen by the client.
CLIENT_CLOSED_REQUEST = 499
MODEL_OWNER = "specserve"
JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class ServingState:
    """What the endpoints share; built once by the app factory."""

    engine: LLMEngine
    async_engine: AsyncEngine
    models: ServedModels
    config: ServerConfig
    metrics: ServerMetrics
    started: int  # Unix time the app was built, reported as the models' creation time
    # Which engine answers a request (the large one, or with routing also the small one).
    tiers: Tiers
    # Whole answers to repeated deterministic requests; None: off.
    response_cache: ResponseCache | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.engine.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.engine.target.model.vocab_size


def serving_state(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(serving_state)]

router = APIRouter()


@router.post("/v1/completions")
async def create_completion(
    body: CompletionRequest, http_request: Request, state: State
) -> Response:
    requested = resolve_model(body.model, state.models)
    check_supported(body)
    prompt_ids = completion_prompt_ids(body, state.tokenizer, state.vocab_size)
    text = request_text(body, prompt_ids, state.tokenizer)
    plan = await state.tiers.plan(body, requested, prompt_ids, text)
    handler = _Handler(state, http_request, body, plan, "prompt")
    return await handler.respond("cmpl", CompletionChunks, completion_response)


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest,
    http_request: Request,
    state: State,
) -> Response:
    requested = resolve_model(body.model, state.models)
    check_supported(body)
    prompt_ids = chat_prompt_ids(body.messages, state.tokenizer)
    text = request_text(body, prompt_ids, state.tokenizer)
    plan = await state.tiers.plan(body, requested, prompt_ids, text)
    handler = _Handler(state, http_request, body, plan, "messages")
    return await handler.respond("chatcmpl", ChatChunks, chat_response)


@router.get("/v1/models")
async def list_models(state: State) -> ModelList:
    models = state.models
    roles: list[tuple[str, ModelRole]] = [(models.target_name, "target")]
    if models.draft_name is not None:
        roles.append((models.draft_name, "draft"))
    if models.routing:
        roles += [(tier.value, "tier") for tier in Tier]
    cards = [
        ModelCard(id=name, created=state.started, owned_by=MODEL_OWNER, role=role)
        for name, role in roles
    ]
    return ModelList(data=cards)


@router.get("/health")
async def health(state: State) -> dict[str, object]:
    return {
        "status": "ok",
        "num_running": len(state.engine.running),
        "num_waiting": state.async_engine.num_waiting,
    }


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


ChunkFactory = Callable[[ResponseContext, PreTrainedTokenizerBase], ChunkFormat]
ResponseBuilder = Callable[[ResponseContext, Generation, PreTrainedTokenizerBase], BaseModel]


class _Handler:
    """Runs one generation request and answers it as JSON or as an event stream."""

    def __init__(
        self,
        state: ServingState,
        http_request: Request,
        body: GenerationRequest,
        plan: TierPlan,
        prompt_param: str,
    ) -> None:
        self.state = state
        self.http_request = http_request
        self.body = body
        self.plan = plan
        self.engine_request = plan.engine_request
        self.prompt_param = prompt_param

    async def respond(
        self, id_prefix: str, chunks: ChunkFactory, build: ResponseBuilder
    ) -> Response:
        request_id = f"{id_prefix}-{uuid.uuid4().hex}"
        context = ResponseContext(
            response_id=request_id,
            created=int(time.time()),
            model=self.engine_request.model,
            drafter=self.engine_request.drafter,
            want_logprobs=self.plan.want_logprobs,
            routing=self.plan.routing,
        )
        stream, context = self._source(request_id, context)
        try:
            if self.body.stream:
                return await self._stream(stream, chunks(context, self.state.tokenizer))
            generation = await stream.collect(self.http_request)
        except ClientDisconnected:
            await stream.close()
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except BaseException:
            await stream.close()
            raise
        await stream.close()
        review = self.state.tiers.review(self.plan, generation, self.body)
        if review.escalate_to is not None:
            retry = _Handler(
                self.state, self.http_request, self.body, review.escalate_to, self.prompt_param
            )
            return await retry.respond(id_prefix, chunks, build)
        context = dataclasses.replace(context, routing=review.routing)
        payload = build(context, generation, self.state.tokenizer)
        return Response(payload.model_dump_json(), media_type=JSON_MEDIA_TYPE)

    def _source(
        self, request_id: str, context: ResponseContext
    ) -> tuple[OutputSource, ResponseContext]:
        """A replay from the response cache when it holds this request, else a new generation.

        A replay reports the drafter that produced the answer, as its statistics describe that
        run. A generation that finishes on its own is stored for the next identical request.
        """
        cache, key = self.state.response_cache, self._response_key()
        if cache is None or key is None:
            return self._generate(request_id, None), context
        cached = cache.get(key)
        self.state.metrics.count_response_cache_lookup(hit=cached is not None)
        if cached is None:
            return self._generate(request_id, functools.partial(self._store, key)), context
        replayed = dataclasses.replace(context, drafter=cached.drafter, cached_response=True)
        return ReplayedGeneration(request_id, cached), replayed

    def _generate(
        self, request_id: str, on_complete: Callable[[Generation], None] | None
    ) -> GenerationStream:
        return GenerationStream(
            self.plan.async_engine,
            self.state.metrics,
            request_id,
            self.engine_request,
            self.prompt_param,
            on_complete,
        )

    def _response_key(self) -> bytes | None:
        """This request's response-cache key; None when it must not use the cache."""
        options = self.body.cache
        if options is not None and not options.response:
            return None
        request = self.engine_request
        return response_key(
            request.model, request.prompt_ids, request.sampling, request.spec, request.drafter
        )

    def _store(self, key: bytes, generation: Generation) -> None:
        cache = self.state.response_cache
        assert cache is not None
        cached = CachedResponse(tuple(generation.outputs), self.engine_request.drafter)
        self.state.metrics.count_response_cache_evictions(cache.put(key, cached))

    async def _stream(self, stream: OutputSource, chunks: ChunkFormat) -> Response:
        first = await stream.first(self.http_request)
        options = self.body.stream_options
        include_usage = options is not None and options.include_usage
        return StreamingResponse(
            sse_events(stream, first, chunks, include_usage),
            media_type=MEDIA_TYPE,
            headers=STREAM_HEADERS,
            # Runs even when the client leaves before the stream starts: the request is aborted.
            background=BackgroundTask(stream.close),
        )
