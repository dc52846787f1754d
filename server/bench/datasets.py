"""Prompt sets for the benchmark and the routing evaluation.

Three sources share one `Prompt` type: a small built-in set written for this project,
Spec-Bench (the standard speculative-decoding benchmark) and HumanEval (function
completion with unit tests). Any `.jsonl` / `.jsonl.gz` file in one of the formats below
loads too; its format is recognised by the fields of its records:

- Spec-Bench: `question_id`, `category`, `turns` and optionally `reference`;
- HumanEval: `task_id`, `prompt`, `entry_point`, `test`;
- this module's own: `id`, `category`, `messages` and/or `text`, optional `reference`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# The shared data folder sits beside the project root: <root>/../shared/data.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
SPEC_BENCH_FILE = Path("spec-bench") / "question.jsonl"
HUMANEVAL_FILE = Path("humaneval") / "HumanEval.jsonl.gz"

DatasetFormat = Literal["spec-bench", "humaneval", "prompts"]
DATASET_NAMES = ("builtin", "spec-bench", "humaneval")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
CHAT_ROLES = frozenset({"system", "user", "assistant"})

# Fields whose presence identifies a file's format; checked in this order.
FORMAT_FIELDS: dict[DatasetFormat, frozenset[str]] = {
    "spec-bench": frozenset({"question_id", "category", "turns"}),
    "humaneval": frozenset({"task_id", "prompt", "entry_point", "test"}),
    "prompts": frozenset({"id", "category"}),
}

# Spec-Bench files MT-Bench's 80 questions under eight sub-categories of 10; the paper
# reports them as one task, so `categories` accepts this group name for all eight.
MT_BENCH_GROUP = "mt_bench"
MT_BENCH_CATEGORIES = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)
HUMANEVAL_CATEGORY = "humaneval"
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, including its "
    "signature, in one ```python code block."
)


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt: chat `messages`, raw completion `text`, or both.

    `reference` is the expected answer where the source has one (a worked solution for
    math, the target sentence for translation); scoring code decides how to compare
    against it.
    """

    id: str
    category: str
    messages: tuple[dict[str, str], ...] | None
    text: str | None
    reference: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.category:
            raise ValueError(f"prompt needs a non-empty id and category, got {self!r}")
        if self.messages is None and self.text is None:
            raise ValueError(f"prompt {self.id!r} has neither messages nor text")
        if not all(isinstance(value, str | None) for value in (self.text, self.reference)):
            raise ValueError(f"prompt {self.id!r}: text and reference must be strings or None")
        for message in self.messages or ():
            if message.get("role") not in CHAT_ROLES or not isinstance(message.get("content"), str):
                raise ValueError(
                    f"prompt {self.id!r}: each message needs a role in {sorted(CHAT_ROLES)} and a "
                    f"string content, got {message!r}"
                )


def user_prompt(
    prompt_id: str, category: str, content: str, reference: str | None = None
) -> Prompt:
    """A chat prompt made of one user message."""
    messages = ({"role": "user", "content": content},)
    return Prompt(prompt_id, category, messages, text=None, reference=reference)


# ---------------------------------------------------------------------------------------------
# Files


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a `.jsonl` or gzip-compressed `.jsonl.gz` file, one JSON object per line."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object per line")
            records.append(record)
    return records


def detect_format(records: Sequence[dict[str, Any]], path: Path) -> DatasetFormat:
    """The format whose identifying fields every record has; `path` names the file in errors."""
    if not records:
        raise ValueError(f"{path}: the file holds no records")
    for name, fields in FORMAT_FIELDS.items():
        if fields <= records[0].keys():
            _require_fields(records, fields, path)
            return name
    known = "; ".join(f"{name}: {sorted(fields)}" for name, fields in FORMAT_FIELDS.items())
    raise ValueError(
        f"{path}: unknown format, first record has fields {sorted(records[0])}; "
        f"expected one of {known}"
    )


def _require_fields(records: Sequence[dict[str, Any]], fields: frozenset[str], path: Path) -> None:
    for index, record in enumerate(records, start=1):
        missing = fields - record.keys()
        if missing:
            raise ValueError(f"{path}: record {index} lacks field(s) {sorted(missing)}")


# ---------------------------------------------------------------------------------------------
# Selection


def select(
    prompts: Iterable[Prompt], categories: Iterable[str] | None = None, limit: int | None = None
) -> list[Prompt]:
    """Prompts of the given categories, at most `limit` per category, in their original order.

    `categories` may name Spec-Bench's MT-Bench group, "mt_bench", for its 8 parts.
    """
    prompts = list(prompts)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of prompts per category, got {limit}")
    wanted = _expand_categories(categories, {prompt.category for prompt in prompts})

    chosen = []
    taken_per_category: dict[str, int] = {}
    for prompt in prompts:
        taken = taken_per_category.get(prompt.category, 0)
        if (wanted is None or prompt.category in wanted) and (limit is None or taken < limit):
            chosen.append(prompt)
            taken_per_category[prompt.category] = taken + 1
    return chosen


def _expand_categories(categories: Iterable[str] | None, available: set[str]) -> set[str] | None:
    if categories is None:
        return None
    wanted = set()
    for category in categories:
        wanted |= set(MT_BENCH_CATEGORIES) if category == MT_BENCH_GROUP else {category}
    unknown = wanted - available
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; available: {sorted(available)}")
    return wanted


def spec_bench_task(category: str) -> str:
    """The Spec-Bench task of a file category: MT-Bench's sub-categories map to "mt_bench"."""
    return MT_BENCH_GROUP if category in MT_BENCH_CATEGORIES else category


# ---------------------------------------------------------------------------------------------
# Spec-Bench


def load_spec_bench(
    path: Path | str | None = None,
    categories: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[Prompt]:
    """Spec-Bench questions as one-message chat prompts (first turn only), in file order.

    `limit` counts per file category; `categories` takes file categories or "mt_bench".
    """
    path = Path(path) if path is not None else DEFAULT_DATA_DIR / SPEC_BENCH_FILE
    records = read_jsonl(path)
    _require_fields(records, FORMAT_FIELDS["spec-bench"], path)
    return select(_spec_bench_prompts(records, path), categories, limit)


def _spec_bench_prompts(records: Sequence[dict[str, Any]], path: Path) -> list[Prompt]:
    prompts = []
    for record in records:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], str):
            raise ValueError(f"{path}: question {record['question_id']}: `turns` is not text")
        reference = _first_turn_reference(record.get("reference"))
        prompt_id = f"spec-bench/{record['question_id']}"
        prompts.append(user_prompt(prompt_id, record["category"], turns[0], reference))
    return prompts


def _first_turn_reference(reference: Any) -> str | None:
    """Spec-Bench stores one reference per turn; RAG's is itself a list of accepted answers.

    Those alternatives are joined one per line; an empty reference counts as none.
    """
    if not reference:
        return None
    first = reference[0] if isinstance(reference, list) else reference
    if isinstance(first, list):
        first = "\n".join(str(answer) for answer in first)
    return str(first) or None


# ---------------------------------------------------------------------------------------------
# HumanEval


def load_humaneval(
    path: Path | str | None = None, limit: int | None = None, as_chat: bool = True
) -> list[Prompt]:
    """HumanEval problems as prompts whose id is the problem's `task_id`.

    Every prompt carries the raw function stub as `text` (for completion endpoints);
    with `as_chat` it also carries one user message asking for the whole function, the
    stub inside a code fence.
    """
    path = Path(path) if path is not None else DEFAULT_DATA_DIR / HUMANEVAL_FILE
    records = read_jsonl(path)
    _require_fields(records, FORMAT_FIELDS["humaneval"], path)
    return select(_humaneval_prompts(records, as_chat), limit=limit)


def _humaneval_prompts(records: Sequence[dict[str, Any]], as_chat: bool) -> list[Prompt]:
    prompts = []
    for record in records:
        stub = record["prompt"]
        messages = None
        if as_chat:
            content = f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{stub.strip()}\n```"
            messages = ({"role": "user", "content": content},)
        prompts.append(Prompt(record["task_id"], HUMANEVAL_CATEGORY, messages, text=stub))
    return prompts


# ---------------------------------------------------------------------------------------------
# This module's own format and dispatch


def _native_prompts(records: Sequence[dict[str, Any]], path: Path) -> list[Prompt]:
    prompts = []
    for index, record in enumerate(records, start=1):
        messages = record.get("messages")
        try:
            prompts.append(
                Prompt(
                    id=str(record["id"]),
                    category=str(record["category"]),
                    messages=tuple(messages) if messages is not None else None,
                    text=record.get("text"),
                    reference=record.get("reference"),
                )
            )
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: record {index}: {error}") from error
    return prompts


def load_file(
    path: Path | str, categories: Iterable[str] | None = None, limit: int | None = None
) -> list[Prompt]:
    """Prompts of a `.jsonl` / `.jsonl.gz` file in any format this module knows."""
    path = Path(path)
    records = read_jsonl(path)
    file_format = detect_format(records, path)
    if file_format == "spec-bench":
        prompts = _spec_bench_prompts(records, path)
    elif file_format == "humaneval":
        prompts = _humaneval_prompts(records, as_chat=True)
    else:
        prompts = _native_prompts(records, path)
    return select(prompts, categories, limit)


def load_dataset(
    spec: str,
    categories: Iterable[str] | None = None,
    limit: int | None = None,
    data_dir: Path | str | None = None,
) -> list[Prompt]:
    """Prompts named by `spec`: "builtin", "spec-bench", "humaneval" or a path to a jsonl file.

    `data_dir` replaces the shared data folder for the named public sets.
    """
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if spec == "builtin":
        return select(builtin_prompts(), categories, limit)
    if spec == "spec-bench":
        return load_spec_bench(data_dir / SPEC_BENCH_FILE, categories, limit)
    if spec == "humaneval":
        return select(load_humaneval(data_dir / HUMANEVAL_FILE), categories, limit)
    if spec.endswith(JSONL_SUFFIXES):
        return load_file(spec, categories, limit)
    raise ValueError(
        f"unknown dataset {spec!r}: expected one of {', '.join(DATASET_NAMES)} "
        f"or a path ending in {' or '.join(JSONL_SUFFIXES)}"
    )


def builtin_prompts() -> list[Prompt]:
    """The built-in set: three prompts in each of code, chat, rewrite and math."""
    return list(BUILTIN_PROMPTS)


# ---------------------------------------------------------------------------------------------
# The built-in set, written for this project. The rewrite prompts ask for an answer that
# repeats much of their own text, the case prompt-lookup drafting is built for; chat is
# its opposite.

_BUGGY_MOVING_AVERAGE = """\
def moving_average(values, window):
    averages = []
    for start in range(len(values) - window):
        chunk = values[start:start + window]
        averages.append(sum(chunk) / len(values))
    return averages"""

_GROUP_BY_INITIAL = """\
def group_by_initial(words):
    groups = {}
    for word in words:
        key = word[:1].lower()
        groups.setdefault(key, []).append(word)
    return {key: sorted(group) for key, group in sorted(groups.items())}"""

_RELEASE_NOTE = (
    "hey all, so the new build thing is finally live. from now on every merge to main kicks off "
    "the tests and if they pass it goes to the staging box on its own, no more copying files by "
    "hand. if something breaks ping the infra channel and we'll roll it back, takes like two "
    "minutes. big thanks to the folks who stayed late last week to get this over the line."
)

_GARDEN_PARAGRAPH = (
    "The community garden have been open since three year, and every spring more neighbour "
    "comes to help. Last april we planted tomato, beans and a row of sunflower along the "
    "fence. The childrens from the school nearby visits on fridays and they waters the plants "
    "theirselves. We hopes to add a second compost bin before the summer, because the first one "
    "are already full."
)

_HARBOUR_PARAGRAPH = (
    "The old harbour district was once the busiest part of the town, with fishing boats unloading "
    "before dawn and warehouses storing salt, rope and timber. When the fishing industry declined "
    "in the 1970s, most warehouses closed and the area was left largely empty for two decades. In "
    "the late 1990s the town council converted several buildings into a library, artist studios "
    "and a covered market, and a ferry service to the nearby islands was restored. Today the "
    "district draws visitors on weekends, although residents worry that rising rents are pushing "
    "out the small workshops that gave the area its character."
)

BUILTIN_PROMPTS: tuple[Prompt, ...] = (
    user_prompt(
        "builtin/code-write",
        "code",
        "Write a Python function `merge_intervals(intervals: list[tuple[int, int]]) -> "
        "list[tuple[int, int]]` that merges overlapping closed intervals and returns the result "
        "sorted by start. Add a short docstring and two example calls.",
    ),
    user_prompt(
        "builtin/code-fix",
        "code",
        "This function should return the mean of every run of `window` consecutive values, but "
        "its results are wrong. Name each bug in one sentence, then give the corrected function."
        f"\n\n```python\n{_BUGGY_MOVING_AVERAGE}\n```",
    ),
    user_prompt(
        "builtin/code-explain",
        "code",
        "Explain what this function does, step by step, and state what it returns for "
        f"`['pear', 'Plum', 'apple', '']`.\n\n```python\n{_GROUP_BY_INITIAL}\n```",
    ),
    user_prompt(
        "builtin/chat-sky",
        "chat",
        "Why is the sky blue at noon but red and orange at sunset? Answer in a few sentences.",
    ),
    user_prompt(
        "builtin/chat-houseplant",
        "chat",
        "Give three practical ways to keep a houseplant alive while I am away for two weeks.",
    ),
    user_prompt(
        "builtin/chat-threads",
        "chat",
        "What is the difference between a process and a thread? Explain it to someone who has "
        "just started programming.",
    ),
    user_prompt(
        "builtin/rewrite-formal",
        "rewrite",
        "Rewrite this announcement in a formal tone, keeping every fact and the order of the "
        f"sentences:\n\n{_RELEASE_NOTE}",
    ),
    user_prompt(
        "builtin/rewrite-proofread",
        "rewrite",
        "Correct the grammar and spelling of this paragraph and return only the corrected "
        f"paragraph:\n\n{_GARDEN_PARAGRAPH}",
    ),
    user_prompt(
        "builtin/rewrite-summarize",
        "rewrite",
        f"Summarize this paragraph in two sentences, reusing its wording:\n\n{_HARBOUR_PARAGRAPH}",
    ),
    user_prompt(
        "builtin/math-muffins",
        "math",
        "A bakery sells muffins for $3 each or in boxes of four for $10. Maria needs exactly 18 "
        "muffins and may not buy more. What is the least she can pay, in dollars?",
        reference="46",
    ),
    user_prompt(
        "builtin/math-train",
        "math",
        "A train covers 210 km at an average speed of 84 km/h. How many minutes does the "
        "journey take?",
        reference="150",
    ),
    user_prompt(
        "builtin/math-tank",
        "math",
        "A 1,200-litre water tank is 35% full. A pump adds 60 litres per minute. How many minutes "
        "until the tank is full?",
        reference="13",
    ),
)
