"""Task words and sizes read from a request's text."""

from __future__ import annotations

import pytest

from server.router.features import RequestFeatures, request_features


@pytest.mark.parametrize(
    ("text", "simple", "code", "reasoning"),
    [
        ("Classify this review as positive or negative.", True, False, False),
        ("Translate 'good morning' into French.", True, False, False),
        ("Answer yes or no: is water wet?", True, False, False),
        ("Reply in one word: the capital of Peru?", True, False, False),
        ("Write a Python function that reverses a list.", False, True, False),
        ("Please implement the class below.\n```python\nclass Stack: ...\n```", False, True, False),
        ("How many apples are left? Think step by step.", False, False, True),
        ("Extract the dates, then calculate the days between them.", True, False, True),
        ("Tell me about the sea.", False, False, False),
    ],
)
def test_task_words(text: str, simple: bool, code: bool, reasoning: bool) -> None:
    features = request_features(text, num_prompt_tokens=10, max_tokens=20)
    assert (features.simple_task, features.code_task, features.reasoning_task) == (
        simple,
        code,
        reasoning,
    )


def test_words_match_whole_words_only() -> None:
    features = request_features("The labels on the extractor fan", 5, 5)
    assert not features.simple_task  # "labels" and "extractor" are not "label" / "extract"


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one prompt token"):
        RequestFeatures(0, 5, False, False, False)
