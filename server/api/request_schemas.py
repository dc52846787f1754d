"""Request bodies of the OpenAI-compatible endpoints, plus the `speculative` and `cache` extensions.

Fields OpenAI defines but this server does not implement are still declared, so that a request
using them gets a clear 400 instead of being silently served without them (see `translate`).
Fields nobody defines are ignored, as OpenAI does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.engine.params import MAX_LOGPROBS, DrafterKind

# torch seeds its generators with 64-bit integers; keep seeds non-negative and signed-safe.
MAX_SEED = 2**63 - 1

# Roles the chat template is given; "developer" is OpenAI's newer name for "system".
ChatRole = Literal["system", "developer", "user", "assistant", "tool"]

TokenIds = list[int]


class SpeculativeOptions(BaseModel):
    """Per-request speculation settings (an extension; OpenAI clients send it in `extra_body`)."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True
    # None: the server's default drafter.
    drafter: DrafterKind | None = None
    # Fixed draft tokens per step; None lets the engine adapt it.
    k: int | None = None


class CacheOptions(BaseModel):
    """Per-request cache settings (an extension; OpenAI clients send it in `extra_body`).

    `{"cache": {"prefix": false}}` computes the whole prompt and leaves none of its KV for later
    requests; `{"cache": {"response": false}}` neither answers from nor stores into the response
    cache. Neither changes the tokens generated.
    """

    model_config = ConfigDict(extra="ignore")

    # Reuse cached KV of a shared prompt prefix, and leave this request's for others.
    prefix: bool = True
    # Answer from, and store into, the server's response cache (deterministic requests only).
    response: bool = True


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class GenerationRequest(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    # None: the server's default model.
    model: str | None = None
    max_tokens: int | None = None
    # OpenAI's default is 1.0 (sampling); send 0 for greedy decoding.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False
    speculative: SpeculativeOptions | None = None
    cache: CacheOptions | None = None


class CompletionRequest(GenerationRequest):
    """`POST /v1/completions`: one prompt, as text or token ids."""

    prompt: str | list[str] | TokenIds | list[TokenIds]
    # Number of most likely alternatives reported per token.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = None
    echo: bool = False
    suffix: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: ChatRole
    # None is allowed for assistant turns that only carried tool calls.
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(GenerationRequest):
    """`POST /v1/chat/completions`: a conversation rendered by the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    # OpenAI's newer name for max_tokens; either may be sent.
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
