"""The measurement loop: every method on every prompt, interleaved, one request at a time.

Methods alternate per prompt rather than running one after another, and their order rotates from
prompt to prompt, so that a slow spell of the machine (other processes share the cores) falls on
every method alike instead of on whichever ran during it. Ratios between methods on the same
prompt are therefore far steadier than the absolute times.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.bench.environment import peak_rss_bytes, reset_peak_rss
from server.bench.methods import Generation, Method
from server.bench.prompts import EncodedPrompt

if TYPE_CHECKING:
    from server.engine.params import SamplingParams

# Sampled runs use this temperature with every token kept (no top-k, top-p or min-p).
SAMPLING_TEMPERATURE = 0.7


class SamplingMode(str, enum.Enum):
    GREEDY = "greedy"
    SAMPLED = "sampled"


@dataclass(frozen=True)
class RunPlan:
    """What to run: output budget, sampling modes, timed repeats and untimed warm-up prompts."""

    max_tokens: int
    modes: tuple[SamplingMode, ...] = (SamplingMode.GREEDY,)
    repeats: int = 1
    warmup: int = 1

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be at least 0, got {self.warmup}")
        if not self.modes:
            raise ValueError("--sampling needs at least one of greedy, sampled")

    def num_runs(self, num_prompts: int, num_methods: int) -> int:
        warmups = min(self.warmup, num_prompts) * len(self.modes)
        return (warmups + num_prompts * len(self.modes) * self.repeats) * num_methods


@dataclass(frozen=True)
class Measurement:
    """One timed run of one method on one prompt."""

    method: str
    prompt_id: str
    group: str
    mode: SamplingMode
    repeat: int
    num_prompt_tokens: int
    generation: Generation
    peak_rss_bytes: int
    # The machine's 1-minute load average as the run started: other processes' share of the CPU.
    load_average: float | None = None

    @property
    def num_output_tokens(self) -> int:
        return len(self.generation.token_ids)


def sampling_params(mode: SamplingMode, prompt: EncodedPrompt, max_tokens: int) -> SamplingParams:
    """Greedy, or temperature sampling seeded per prompt so every method sees the same seed."""
    from server.engine.params import SamplingParams

    if mode is SamplingMode.GREEDY:
        return SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return SamplingParams(max_tokens=max_tokens, temperature=SAMPLING_TEMPERATURE, seed=prompt.seed)


def rotated(methods: Sequence[Method], shift: int) -> list[Method]:
    if not methods:
        return []
    shift %= len(methods)
    return [*methods[shift:], *methods[:shift]]


def run_all(
    methods: Sequence[Method],
    prompts: Sequence[EncodedPrompt],
    plan: RunPlan,
    on_run: Callable[[str], None] = lambda _: None,
) -> list[Measurement]:
    """Time every (repeat, prompt, mode, method), methods interleaved and rotated per prompt.

    `on_run` is called after each run with a short description (for a progress bar).
    """
    measurements = []
    for repeat in range(plan.repeats):
        for index, prompt in enumerate(prompts):
            for mode in plan.modes:
                for method in rotated(methods, index + repeat):
                    measurements.append(_measure(method, prompt, mode, repeat, plan.max_tokens))
                    on_run(f"{prompt.group} {method.spec.name}")
    return measurements


def _measure(
    method: Method, prompt: EncodedPrompt, mode: SamplingMode, repeat: int, max_tokens: int
) -> Measurement:
    reset_peak_rss()
    load_average = os.getloadavg()[0]
    generation = method.generate(list(prompt.token_ids), sampling_params(mode, prompt, max_tokens))
    return Measurement(
        method=method.spec.name,
        prompt_id=prompt.id,
        group=prompt.group,
        mode=mode,
        repeat=repeat,
        num_prompt_tokens=len(prompt.token_ids),
        generation=generation,
        peak_rss_bytes=peak_rss_bytes(),
        load_average=load_average,
    )
