"""Running each prompt once on each tier: the small model alone, then the large speculative tier.

Both answer greedily, one request at a time, with the prefix cache off (a prompt's second run must
not find its KV already computed by the first). The router scores the prompt first, exactly as
the server would for an `auto` request.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.bench.datasets import (
    HUMANEVAL_CATEGORY,
    HUMANEVAL_FILE,
    SPEC_BENCH_FILE,
    Prompt,
    load_humaneval,
    load_spec_bench,
)
from server.bench.routing.records import PromptRecord, TierRun
from server.router.escalation import answer_confidence

if TYPE_CHECKING:
    from server.bench.humaneval import Problem
    from server.cli import DtypeName
    from server.engine.engine import LLMEngine
    from server.router.router import Router

MATH_CATEGORY = "math_reasoning"
# One request at a time: 256 MiB holds several thousand tokens of both models in bf16.
BENCH_KV_CACHE_BYTES = 256 << 20
WARMUP_TOKENS = 4


@dataclass(frozen=True)
class BenchPrompt:
    prompt: Prompt
    token_ids: list[int]
    text: str  # the user's words, which the router's task features read


def load_prompts(humaneval_limit: int, math_limit: int, data_dir: Path) -> list[Prompt]:
    """HumanEval chat prompts and Spec-Bench math questions, alternating (a cut run stays mixed)."""
    code = (
        load_humaneval(data_dir / HUMANEVAL_FILE, limit=humaneval_limit) if humaneval_limit else []
    )
    math: list[Prompt] = []
    if math_limit:
        math = load_spec_bench(data_dir / SPEC_BENCH_FILE, [MATH_CATEGORY], math_limit)
    shorter = min(len(code), len(math))
    mixed = [p for pair in zip(code[:shorter], math[:shorter], strict=True) for p in pair]
    return mixed + code[shorter:] + math[shorter:]


def encode(prompt: Prompt, tokenizer: Any) -> BenchPrompt:
    if prompt.messages is None:
        raise ValueError(f"prompt {prompt.id!r} has no chat messages")
    messages = [dict(message) for message in prompt.messages]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return BenchPrompt(prompt, [int(token) for token in ids], messages[-1]["content"])


@dataclass(frozen=True)
class Generated:
    text: str
    latency_s: float
    model_s: float
    token_logprobs: list[float]


def generate_once(
    engine: LLMEngine, request_id: str, prompt_ids: list[int], max_tokens: int
) -> Generated:
    """One greedy answer, alone in the engine; times the whole request and the forwards in it."""
    from server.engine.params import SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=0)
    runners = [engine.target] + ([engine.draft] if engine.draft is not None else [])
    busy_before_s = sum(runner.busy_s for runner in runners)
    started = time.perf_counter()
    seq = engine.add_request(request_id, prompt_ids, sampling)
    text = ""
    while engine.has_unfinished():
        text += "".join(output.new_text for output in engine.step())
    latency_s = time.perf_counter() - started
    model_s = sum(runner.busy_s for runner in runners) - busy_before_s
    return Generated(text, latency_s, model_s, [entry.logprob for entry in seq.logprobs])


Grader = Callable[[Prompt, str], bool]


def grade(prompt: Prompt, answer: str) -> bool:
    """HumanEval by its tests in a subprocess, math by the final number."""
    from server.bench.humaneval import check_completion, extract_code
    from server.bench.math_eval import is_correct

    if prompt.category == HUMANEVAL_CATEGORY:
        problem = _humaneval_problems()[prompt.id]
        return check_completion(problem, extract_code(answer, problem)).passed
    if prompt.reference is None:
        raise ValueError(f"prompt {prompt.id!r} has no reference answer")
    return is_correct(answer, prompt.reference)


@functools.cache
def _humaneval_problems() -> dict[str, Problem]:
    from server.bench.humaneval import load_problems

    return {problem.task_id: problem for problem in load_problems()}


def tier_run(generated: Generated, correct: bool) -> TierRun:
    return TierRun(
        text=generated.text,
        correct=correct,
        latency_s=generated.latency_s,
        model_s=generated.model_s,
        num_output_tokens=len(generated.token_logprobs),
        confidence_mean=answer_confidence(generated.token_logprobs, "mean"),
        confidence_min=answer_confidence(generated.token_logprobs, "min"),
    )


def record_prompt(
    prompt: BenchPrompt,
    router: Router,
    small: LLMEngine,
    large: LLMEngine,
    max_tokens: int,
    grader: Grader = grade,
) -> PromptRecord:
    """Score the prompt for the router, then answer it on each tier once."""
    assessment = router.assess(prompt.token_ids, prompt.text, max_tokens)
    runs = []
    for tier, engine in (("small", small), ("large", large)):
        generated = generate_once(
            engine, f"{prompt.prompt.id}/{tier}", prompt.token_ids, max_tokens
        )
        runs.append(tier_run(generated, grader(prompt.prompt, generated.text)))
    return PromptRecord(
        id=prompt.prompt.id,
        category=prompt.prompt.category,
        terms=assessment.terms,
        scoring_s=assessment.scoring_s,
        small=runs[0],
        large=runs[1],
    )


def warm_up(engines: Sequence[LLMEngine], prompt: BenchPrompt) -> None:
    """First forwards allocate and pick kernels; keep that out of the first record."""
    for index, engine in enumerate(engines):
        generate_once(engine, f"warm-up/{index}", prompt.token_ids, WARMUP_TOKENS)


def load_engines(
    target: str, draft: str, dtype: DtypeName, device_name: str
) -> tuple[LLMEngine, LLMEngine, Router]:
    """The small engine over the draft's weights, the large (speculative) one, and the router."""
    from server.cli import TORCH_DTYPES
    from server.engine.loading import DraftOptions, build_engine, load_pair, resolve_device
    from server.engine.params import EngineConfig
    from server.router.config import RouterConfig
    from server.router.router import Router
    from server.router.small_tier import build_small_engine

    device = resolve_device(device_name)
    # As `python -m server --routing` loads it: the device's default quantization, and the full
    # head, since the draft answers small-tier requests alone.
    draft_options = DraftOptions(quantization=DraftOptions.auto(device).quantization)
    pair = load_pair(target, draft, TORCH_DTYPES[dtype], device, draft_options)
    # No prefix cache: a prompt's second run must not find its KV computed by the first.
    config = EngineConfig(kv_cache_bytes=BENCH_KV_CACHE_BYTES, enable_prefix_cache=False)
    large = build_engine(pair, config)
    small = build_small_engine(large)
    return small, large, Router(small.target.model, RouterConfig())
