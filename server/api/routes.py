"""The endpoints: OpenAI-compatible generation, the model list, health and metrics."""

from __future__ import annotations

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
from server.api.generation import ClientDisconnected, Generation, GenerationStream
from server.api.request_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from server.api.response_schemas import ModelCard, ModelList, ModelRole
from server.api.streaming import (
    MEDIA_TYPE,
    STREAM_HEADERS,
    ChatChunks,
    ChunkFormat,
    CompletionChunks,
    sse_events,
)
from server.api.translate import (
    EngineRequest,
    build_engine_request,
    chat_prompt_ids,
    check_supported,
    completion_prompt_ids,
    resolve_model,
)
from server.engine.async_engine import AsyncEngine
from server.engine.engine import LLMEngine
from server.metrics import CONTENT_TYPE, ServerMetrics

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
    model = resolve_model(body.model, state.models)
    check_supported(body)
    prompt_ids = completion_prompt_ids(body, state.tokenizer, state.vocab_size)
    engine_request = build_engine_request(body, model, prompt_ids, state.engine)
    handler = _Handler(state, http_request, body, engine_request, "prompt")
    return await handler.respond("cmpl", CompletionChunks, completion_response)


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest,
    http_request: Request,
    state: State,
) -> Response:
    model = resolve_model(body.model, state.models)
    check_supported(body)
    prompt_ids = chat_prompt_ids(body.messages, state.tokenizer)
    engine_request = build_engine_request(body, model, prompt_ids, state.engine)
    handler = _Handler(state, http_request, body, engine_request, "messages")
    return await handler.respond("chatcmpl", ChatChunks, chat_response)


@router.get("/v1/models")
async def list_models(state: State) -> ModelList:
    models = state.models
    roles: list[tuple[str, ModelRole]] = [(models.target_name, "target")]
    if models.draft_name is not None:
        roles.append((models.draft_name, "draft"))
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
        engine_request: EngineRequest,
        prompt_param: str,
    ) -> None:
        self.state = state
        self.http_request = http_request
        self.body = body
        self.engine_request = engine_request
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
            want_logprobs=self.engine_request.sampling.logprobs is not None,
        )
        stream = GenerationStream(
            self.state.async_engine,
            self.state.metrics,
            request_id,
            self.engine_request,
            self.prompt_param,
        )
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
        payload = build(context, generation, self.state.tokenizer)
        return Response(payload.model_dump_json(), media_type=JSON_MEDIA_TYPE)

    async def _stream(self, stream: GenerationStream, chunks: ChunkFormat) -> Response:
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
