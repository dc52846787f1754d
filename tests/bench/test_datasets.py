import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from server.bench.datasets import (
    DEFAULT_DATA_DIR,
    HUMANEVAL_FILE,
    MT_BENCH_CATEGORIES,
    SPEC_BENCH_FILE,
    Prompt,
    builtin_prompts,
    load_dataset,
    load_file,
    load_humaneval,
    load_spec_bench,
    select,
    spec_bench_task,
)

needs_data = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason=f"shared benchmark data not found at {DEFAULT_DATA_DIR}"
)

# What the shared Spec-Bench file holds: five tasks of 80 questions, and MT-Bench's 80 filed under
# eight sub-categories of 10.
SPEC_BENCH_TASK_SIZES = {"translation": 80, "summarization": 80, "qa": 80, "math_reasoning": 80}
SPEC_BENCH_TASK_SIZES |= {"rag": 80} | dict.fromkeys(MT_BENCH_CATEGORIES, 10)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_builtin_set_covers_four_categories():
    prompts = builtin_prompts()
    counts = Counter(prompt.category for prompt in prompts)
    assert counts == {"code": 3, "chat": 3, "rewrite": 3, "math": 3}
    assert len({prompt.id for prompt in prompts}) == len(prompts)
    for prompt in prompts:
        assert prompt.messages is not None and prompt.messages[0]["role"] == "user"
        assert (prompt.reference is not None) == (prompt.category == "math")


def test_builtin_rewrite_prompts_contain_the_paragraph_they_rewrite():
    for prompt in select(builtin_prompts(), ["rewrite"]):
        instruction, paragraph = prompt.messages[0]["content"].split("\n\n", 1)
        assert len(paragraph) > 2 * len(instruction)


def test_select_limits_per_category_and_keeps_order():
    prompts = [Prompt(f"p{i}", "ab"[i % 2], None, text=str(i)) for i in range(6)]
    assert [prompt.id for prompt in select(prompts, limit=2)] == ["p0", "p1", "p2", "p3"]
    assert [prompt.id for prompt in select(prompts, ["b"], limit=2)] == ["p1", "p3"]
    with pytest.raises(ValueError, match="unknown categories"):
        select(prompts, ["c"])
    with pytest.raises(ValueError, match="limit"):
        select(prompts, limit=0)


def test_prompt_validation():
    with pytest.raises(ValueError, match="neither messages nor text"):
        Prompt("x", "chat", None, None)
    with pytest.raises(ValueError, match="role"):
        Prompt("x", "chat", ({"role": "robot", "content": "hi"},), None)


@needs_data
def test_spec_bench_loads_every_question_with_its_file_category():
    prompts = load_spec_bench()
    assert len(prompts) == 480
    assert Counter(prompt.category for prompt in prompts) == SPEC_BENCH_TASK_SIZES
    assert Counter(spec_bench_task(prompt.category) for prompt in prompts) == dict.fromkeys(
        ["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"], 80
    )
    first = prompts[0]
    assert first.id == "spec-bench/81" and first.category == "writing"
    assert len(first.messages) == 1 and first.text is None


@needs_data
def test_spec_bench_filters():
    math = load_spec_bench(categories=["math_reasoning"], limit=5)
    assert [prompt.id for prompt in math] == [f"spec-bench/{401 + i}" for i in range(5)]
    assert all(prompt.reference.rstrip().splitlines()[-1].startswith("####") for prompt in math)

    mt_bench = load_spec_bench(categories=["mt_bench"], limit=2)
    assert Counter(prompt.category for prompt in mt_bench) == dict.fromkeys(MT_BENCH_CATEGORIES, 2)
    assert len(load_spec_bench(limit=1)) == len(SPEC_BENCH_TASK_SIZES)


@needs_data
def test_spec_bench_references_are_first_turn_text():
    by_category = {prompt.category: prompt for prompt in load_spec_bench(limit=1)}
    assert by_category["qa"].reference is None
    assert by_category["math"].reference == "Area is 3"
    assert by_category["rag"].reference.splitlines()[0] == "a source of lumber"


@needs_data
def test_humaneval_loads_chat_and_completion_forms():
    prompts = load_humaneval()
    assert len(prompts) == 164
    first = prompts[0]
    assert first.id == "HumanEval/0" and first.category == "humaneval"
    assert first.text.startswith("from typing import List")
    assert "def has_close_elements" in first.messages[0]["content"]

    completion_only = load_humaneval(limit=3, as_chat=False)
    assert len(completion_only) == 3 and completion_only[0].messages is None


@needs_data
def test_load_dataset_dispatches_on_name_and_path():
    assert len(load_dataset("builtin", categories=["math"])) == 3
    assert len(load_dataset("spec-bench", limit=1)) == len(SPEC_BENCH_TASK_SIZES)
    assert len(load_dataset("humaneval", limit=7)) == 7
    assert len(load_dataset(str(DEFAULT_DATA_DIR / SPEC_BENCH_FILE), ["qa"])) == 80
    assert len(load_dataset(str(DEFAULT_DATA_DIR / HUMANEVAL_FILE))) == 164


def test_load_dataset_reads_its_own_format(tmp_path):
    records = [
        {"id": "a", "category": "chat", "messages": [{"role": "user", "content": "hi"}]},
        {"id": "b", "category": "code", "text": "def f():", "reference": "pass"},
    ]
    path = tmp_path / "prompts.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)

    prompts = load_dataset(str(path))
    assert prompts[0].messages == ({"role": "user", "content": "hi"},)
    assert prompts[1] == Prompt("b", "code", None, "def f():", "pass")


def test_spec_bench_format_is_recognised_by_its_fields(tmp_path):
    record = {"question_id": 7, "category": "qa", "turns": ["Why?", "And then?"]}
    prompts = load_file(write_jsonl(tmp_path / "questions.jsonl", [record]))
    assert prompts == [Prompt("spec-bench/7", "qa", ({"role": "user", "content": "Why?"},), None)]


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("gsm8k")
    with pytest.raises(ValueError, match="unknown format"):
        load_file(write_jsonl(tmp_path / "odd.jsonl", [{"question": "?"}]))
    with pytest.raises(ValueError, match=r"record 2 lacks field\(s\) \['turns'\]"):
        records = [{"question_id": 1, "category": "qa", "turns": ["?"]}]
        load_file(
            write_jsonl(
                tmp_path / "partial.jsonl", records + [{"question_id": 2, "category": "qa"}]
            )
        )
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not valid JSON"):
        (tmp_path / "bad.jsonl").write_text("{oops\n")
        load_file(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="record 1"):
        load_file(
            write_jsonl(tmp_path / "roles.jsonl", [{"id": "a", "category": "c", "messages": [{}]}])
        )
    with pytest.raises(ValueError, match="holds no records"):
        load_file(write_jsonl(tmp_path / "empty.jsonl", []))
