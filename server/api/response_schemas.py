"""Response bodies, shaped as OpenAI's, with the `speculative`, `cached_response` and `routing`
extensions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FinishReasonName = Literal["stop", "length", "abort"]
# "target" answers requests; "draft" proposes tokens for it (and, with routing, answers alone);
# "tier" names a routing tier: small, large or auto.
ModelRole = Literal["target", "draft", "tier"]


def _is_none(value: object) -> bool:
    return value is None


def omitted_when_none() -> Any:
    """A field left out of the JSON while unset (usage and extensions on stream chunks)."""
    return Field(default=None, exclude_if=_is_none)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PromptTokensDetails(BaseModel):
    # Prompt tokens whose KV came from the prefix cache instead of being computed.
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class SpeculativeInfo(BaseModel):
    """How speculation went for one request (an extension of the OpenAI response)."""

    drafter: str
    drafted_tokens: int
    accepted_tokens: int
    # Accepted over drafted tokens; 0 when nothing was drafted.
    acceptance_rate: float
    # Tokens emitted per drafting step, the bonus token included.
    mean_acceptance_length: float
    # accepted_per_position[i]: steps whose draft token i was accepted.
    accepted_per_position: list[int]
    drafted_per_position: list[int]
    draft_steps: int
    target_steps: int


class RoutingInfo(BaseModel):
    """Which tier answered and why (an extension, present when the server routes)."""

    # The tier the request named: small, large or auto.
    requested: str
    # The tier whose model produced the answer.
    tier: str
    # The router's score and threshold for `auto` requests (small when score < threshold).
    score: float | None = None
    threshold: float | None = None
    # True when a small answer was judged too unsure and redone by the large model.
    escalated: bool = False
    # The small answer's confidence, where escalation read it.
    confidence: float | None = omitted_when_none()


# ---------------------------------------------------------------------- /v1/completions


class CompletionLogprobs(BaseModel):
    """Legacy completions format: parallel lists, one entry per generated token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonName | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    # Stream chunks carry usage and speculation only in their last chunks.
    usage: Usage | None = omitted_when_none()
    speculative: SpeculativeInfo | None = omitted_when_none()
    # True when the answer came from the response cache (on the final chunk of a stream).
    cached_response: bool | None = omitted_when_none()
    # How the request was routed (on the final chunk of a stream).
    routing: RoutingInfo | None = omitted_when_none()


# ---------------------------------------------------------------------- /v1/chat/completions


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobEntry] = Field(default_factory=list)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReasonName | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    speculative: SpeculativeInfo | None = None
    # True when the answer came from the response cache; absent otherwise.
    cached_response: bool | None = omitted_when_none()
    # How the request was routed; absent when the server does not route.
    routing: RoutingInfo | None = omitted_when_none()


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = omitted_when_none()
    content: str | None = omitted_when_none()


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReasonName | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = omitted_when_none()
    speculative: SpeculativeInfo | None = omitted_when_none()
    # True when the answer came from the response cache (on the final chunk of a stream).
    cached_response: bool | None = omitted_when_none()
    # How the request was routed (on the final chunk of a stream).
    routing: RoutingInfo | None = omitted_when_none()


# ---------------------------------------------------------------------- /v1/models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    role: ModelRole  # an extension


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
