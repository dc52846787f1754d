"""Server-sent events for streamed completions and chat completions.

A stream is: (chat only) a chunk announcing the assistant role; one chunk per engine output with
new text; a chunk with the finish reason, the speculation block and (when the server routes) the
routing block; a usage chunk when the client asked for one; then `data: [DONE]`. Text the engine
holds back (a possible stop string, half a UTF-8 character) arrives in a later chunk, so the joined
deltas equal the non-streamed text. An answer from the response cache streams the same way, its
finish chunk marked `cached_response: true`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from pydantic import BaseModel
from transformers import PreTrainedTokenizerBase

from server.api.errors import internal_error
from server.api.formatting import (
    ResponseContext,
    cached_response_flag,
    chat_logprobs,
    completion_logprobs,
    finish_reason_name,
    speculative_info,
    usage_of,
)
from server.api.generation import OutputSource
from server.api.response_schemas import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
)
from server.engine.engine import RequestOutput
from server.engine.sequence import TokenLogprob

logger = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
DONE_EVENT = "data: [DONE]\n\n"
# Keep proxies from buffering the stream.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: BaseModel) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


class ChunkFormat(Protocol):
    """How one endpoint shapes its chunks."""

    def opening(self) -> BaseModel | None: ...

    def content(self, text: str, logprobs: list[TokenLogprob]) -> BaseModel: ...

    def finish(self, output: RequestOutput, logprobs: list[TokenLogprob]) -> BaseModel: ...

    def usage(self, output: RequestOutput) -> BaseModel: ...


async def sse_events(
    stream: OutputSource, first: RequestOutput, chunks: ChunkFormat, include_usage: bool
) -> AsyncIterator[str]:
    """The whole event stream of a request whose first output has arrived."""
    try:
        opening = chunks.opening()
        if opening is not None:
            yield sse_event(opening)
        async for event in _output_events(stream, first, chunks, include_usage):
            yield event
        yield DONE_EVENT
    except Exception:  # the status line is sent: report in-band, as OpenAI does
        logger.exception("stream %s failed", stream.request_id)
        yield sse_event(internal_error().to_body())
    finally:
        await stream.close()


async def _output_events(
    stream: OutputSource, first: RequestOutput, chunks: ChunkFormat, include_usage: bool
) -> AsyncIterator[str]:
    # Logprobs of tokens whose text is still held back travel with the next text.
    pending: list[TokenLogprob] = []
    async for output in _with_first(first, stream):
        pending += output.new_logprobs
        if output.new_text:
            yield sse_event(chunks.content(output.new_text, pending))
            pending = []
        if output.finished:
            yield sse_event(chunks.finish(output, pending))
            if include_usage:
                yield sse_event(chunks.usage(output))


async def _with_first(first: RequestOutput, stream: OutputSource) -> AsyncIterator[RequestOutput]:
    yield first
    async for output in stream.rest():
        yield output


class CompletionChunks:
    """Chunks of `/v1/completions`: the response object with a text delta."""

    def __init__(self, context: ResponseContext, tokenizer: PreTrainedTokenizerBase) -> None:
        self.context = context
        self.tokenizer = tokenizer
        self.num_chars_sent = 0

    def opening(self) -> BaseModel | None:
        return None

    def content(self, text: str, logprobs: list[TokenLogprob]) -> BaseModel:
        chunk = self._chunk(CompletionChoice(text=text, logprobs=self._logprobs(logprobs)))
        self.num_chars_sent += len(text)
        return chunk

    def finish(self, output: RequestOutput, logprobs: list[TokenLogprob]) -> BaseModel:
        choice = CompletionChoice(
            text="",
            logprobs=self._logprobs(logprobs),
            finish_reason=finish_reason_name(output.finish_reason),
        )
        chunk = self._chunk(choice)
        chunk.speculative = speculative_info(output.stats, self.context.drafter)
        chunk.cached_response = cached_response_flag(self.context)
        chunk.routing = self.context.routing
        return chunk

    def usage(self, output: RequestOutput) -> BaseModel:
        chunk = self._chunk(None)
        chunk.usage = usage_of(output)
        return chunk

    def _chunk(self, choice: CompletionChoice | None) -> CompletionResponse:
        return CompletionResponse(
            id=self.context.response_id,
            created=self.context.created,
            model=self.context.model,
            choices=[] if choice is None else [choice],
        )

    def _logprobs(self, logprobs: list[TokenLogprob]) -> CompletionLogprobs | None:
        if not self.context.want_logprobs:
            return None
        return completion_logprobs(logprobs, self.tokenizer, self.num_chars_sent)


class ChatChunks:
    """Chunks of `/v1/chat/completions`: `chat.completion.chunk` objects with deltas."""

    def __init__(self, context: ResponseContext, tokenizer: PreTrainedTokenizerBase) -> None:
        self.context = context
        self.tokenizer = tokenizer

    def opening(self) -> BaseModel | None:
        return self._chunk(ChatChunkChoice(delta=ChatDelta(role="assistant", content="")))

    def content(self, text: str, logprobs: list[TokenLogprob]) -> BaseModel:
        choice = ChatChunkChoice(delta=ChatDelta(content=text), logprobs=self._logprobs(logprobs))
        return self._chunk(choice)

    def finish(self, output: RequestOutput, logprobs: list[TokenLogprob]) -> BaseModel:
        choice = ChatChunkChoice(
            delta=ChatDelta(),
            logprobs=self._logprobs(logprobs),
            finish_reason=finish_reason_name(output.finish_reason),
        )
        chunk = self._chunk(choice)
        chunk.speculative = speculative_info(output.stats, self.context.drafter)
        chunk.cached_response = cached_response_flag(self.context)
        chunk.routing = self.context.routing
        return chunk

    def usage(self, output: RequestOutput) -> BaseModel:
        chunk = self._chunk(None)
        chunk.usage = usage_of(output)
        return chunk

    def _chunk(self, choice: ChatChunkChoice | None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.context.response_id,
            created=self.context.created,
            model=self.context.model,
            choices=[] if choice is None else [choice],
        )

    def _logprobs(self, logprobs: list[TokenLogprob]) -> ChatLogprobs | None:
        if not self.context.want_logprobs:
            return None
        return chat_logprobs(logprobs, self.tokenizer)
