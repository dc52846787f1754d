"""Response bodies, shaped as OpenAI's, with the `speculative` extension block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FinishReasonName = Literal["stop", "length", "abort"]
# "target" answers requests; "draft" proposes tokens for it.
ModelRole = Literal["target", "draft"]


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
