"""What a request says about its own difficulty, read from its text and limits (no model).

Three families of task words are looked for, as whole words and case-insensitively:
- simple tasks (classify, extract, translate, answer in one word or yes/no), which a small model
  usually answers as well as a large one;
- code writing (write a function, implement, a code fence), where size helps;
- multi-step reasoning and arithmetic (step by step, how many, calculate, prove).
Each family counts once however many of its words appear: the score weighs kinds of task, not
repetition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIMPLE_TASK = re.compile(
    r"\b(?:classify|classification|categori[sz]e|extract|translate|translation|sentiment"
    r"|one word|single word|yes or no|true or false|label)\b",
    re.IGNORECASE,
)
CODE_TASK = re.compile(
    r"```|\bdef \w+\(|\b(?:write|implement|complete|fix|debug|refactor)\b[^.\n]{0,40}"
    r"\b(?:function|method|class|program|script|code)\b",
    re.IGNORECASE,
)
REASONING_TASK = re.compile(
    r"\b(?:step by step|how many|how much|calculate|compute|solve|prove|derive|reason"
    r"|explain why)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RequestFeatures:
    """A request's size and kind of task, before any model has looked at it."""

    num_prompt_tokens: int
    # The most tokens the answer may take (the request's max_tokens, or the room left).
    max_tokens: int
    simple_task: bool
    code_task: bool
    reasoning_task: bool

    def __post_init__(self) -> None:
        if self.num_prompt_tokens < 1 or self.max_tokens < 1:
            raise ValueError(
                f"a request has at least one prompt token and one answer token, got "
                f"{self.num_prompt_tokens} and {self.max_tokens}"
            )


def request_features(text: str, num_prompt_tokens: int, max_tokens: int) -> RequestFeatures:
    """Features of a request whose instruction reads `text` (the user's words, not a template)."""
    return RequestFeatures(
        num_prompt_tokens=num_prompt_tokens,
        max_tokens=max_tokens,
        simple_task=SIMPLE_TASK.search(text) is not None,
        code_task=CODE_TASK.search(text) is not None,
        reasoning_task=REASONING_TASK.search(text) is not None,
    )
