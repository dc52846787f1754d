"""Choosing the benchmark's prompts and turning them into token ids.

Several datasets can be combined in one run; `--limit` caps each category, with per-category
overrides (`1,humaneval=4`). Results are grouped by task: Spec-Bench's eight MT-Bench
sub-categories form the one group "mt_bench", as the paper reports them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.bench.datasets import Prompt, load_dataset, select, spec_bench_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Spec-Bench prompts carry ids "spec-bench/<question_id>", whichever file they were read from.
SPEC_BENCH_ID_PREFIX = "spec-bench/"


@dataclass(frozen=True)
class PromptLimits:
    """Prompts kept per category: `default` (None: all) unless the category has its own."""

    default: int | None = None
    per_category: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        limits = [self.default] + [limit for _, limit in self.per_category]
        if any(limit is not None and limit <= 0 for limit in limits):
            raise ValueError(f"prompt limits must be positive, got {self}")

    def of(self, category: str) -> int | None:
        return dict(self.per_category).get(category, self.default)


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt with its token ids, its result group and its sampling seed."""

    prompt: Prompt
    token_ids: tuple[int, ...]

    @property
    def id(self) -> str:
        return self.prompt.id

    @property
    def group(self) -> str:
        """Spec-Bench's task for its prompts (MT-Bench parts pooled); the category otherwise."""
        if self.prompt.id.startswith(SPEC_BENCH_ID_PREFIX):
            return spec_bench_task(self.prompt.category)
        return self.prompt.category

    @property
    def seed(self) -> int:
        """A seed fixed per prompt (the same in every method and every run)."""
        return zlib.crc32(self.prompt.id.encode())


def parse_limits(text: str | None) -> PromptLimits:
    """`"2"`, `"humaneval=4"` or `"1,humaneval=4"`; raises ValueError on anything else."""
    if not text:
        return PromptLimits()
    default, overrides = None, []
    for part in text.split(","):
        name, _, value = part.rpartition("=")
        if not value.strip().isdigit():
            raise ValueError(f"expected N or CATEGORY=N in --limit, got {part!r}")
        if name:
            overrides.append((name.strip(), int(value)))
        else:
            default = int(value)
    return PromptLimits(default, tuple(overrides))


def load_prompts(
    datasets: Sequence[str],
    categories: Iterable[str] | None,
    limits: PromptLimits,
) -> list[Prompt]:
    """The prompts of every named dataset, filtered by category and capped per category."""
    everything = [prompt for name in datasets for prompt in load_dataset(name)]
    chosen = select(everything, categories)
    taken: dict[str, int] = {}
    kept = []
    for prompt in chosen:
        limit = limits.of(prompt.category)
        if limit is None or taken.get(prompt.category, 0) < limit:
            kept.append(prompt)
            taken[prompt.category] = taken.get(prompt.category, 0) + 1
    return kept


def encode(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> EncodedPrompt:
    """Chat prompts through the tokenizer's chat template; text prompts as they are."""
    if prompt.messages is not None:
        ids = tokenizer.apply_chat_template(
            [dict(message) for message in prompt.messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
    else:
        ids = tokenizer.encode(prompt.text or "")
    return EncodedPrompt(prompt, tuple(int(token) for token in ids))


def groups_in_order(prompts: Sequence[EncodedPrompt]) -> list[str]:
    return list(dict.fromkeys(prompt.group for prompt in prompts))


def by_id(prompts: Sequence[EncodedPrompt]) -> Mapping[str, EncodedPrompt]:
    return {prompt.id: prompt for prompt in prompts}
