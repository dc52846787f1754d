"""`python -m server.bench` end to end on tiny models: files written, greedy check, exit codes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server.bench import local
from server.bench.__main__ import EXIT_GREEDY_MISMATCH, EXIT_OK, EXIT_USAGE, main
from server.bench.context import BenchContext, context_from_pair
from server.bench.methods import Generation, TargetCheck, method_spec
from server.bench.options import parse_options
from server.bench.peers import HFModels, PeerSources
from server.bench.prompts import load_prompts, parse_limits
from server.engine.loading import load_pair
from tests.conftest import make_tiny_hf_checkpoint, write_tiny_gguf

# Long enough for the built-in prompts with the tiny tokenizer (a few hundred tokens each).
TINY_CONTEXT = 1024
# Peaked logits (see make_tiny_hf_checkpoint), so greedy choices are far from ties.
TINY_INIT_RANGE = 1.0
# Noise on the draft's output head: it agrees with the target often, but not always.
DRAFT_HEAD_NOISE = 0.5
MAX_TOKENS = "12"
PLOTS = ("speedup_by_group.png", "latency.png", "acceptance_per_position.png")


def perturbed_copy(source: Path, destination: Path, noise: float) -> Path:
    """A copy of a checkpoint directory whose output head has Gaussian noise added."""
    shutil.copytree(source, destination)
    weights_file = destination / "model.safetensors"
    weights = load_file(weights_file)
    generator = torch.Generator().manual_seed(0)
    head = weights["lm_head.weight"]
    weights["lm_head.weight"] = head + noise * torch.randn(head.shape, generator=generator)
    save_file(weights, weights_file, metadata={"format": "pt"})
    return destination


@pytest.fixture(scope="module")
def tiny_context(tmp_path_factory: pytest.TempPathFactory) -> BenchContext:
    """Target, noisy draft, their transformers copies and the target's GGUF, all tiny float32."""
    root = tmp_path_factory.mktemp("bench-models")
    target_dir = make_tiny_hf_checkpoint(
        root,
        "qwen2",
        initializer_range=TINY_INIT_RANGE,
        max_position_embeddings=TINY_CONTEXT,
    )
    draft_dir = perturbed_copy(target_dir, root / "draft", DRAFT_HEAD_NOISE)
    gguf = write_tiny_gguf(target_dir, root / "target.gguf")
    pair = load_pair(str(target_dir), str(draft_dir), torch.float32, torch.device("cpu"))
    peers = PeerSources(hf=HFModels(target_dir, draft_dir, torch.float32), target_gguf=gguf)
    return context_from_pair(pair, "fp32", "cpu", peers)


def bench_args(out: Path, limit: int = 1) -> list[str]:
    """`limit` prompts per category, short answers, no warm-up, one round of cost forwards."""
    return [
        *("--limit", str(limit), "--max-tokens", MAX_TOKENS, "--warmup", "0"),
        *("--cost-forwards", "1", "--out", str(out)),
    ]


def test_end_to_end_writes_results_and_passes_the_greedy_check(
    tiny_context: BenchContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = bench_args(tmp_path, limit=2)
    args += ["--methods", "all", "--k", "2", "--sampling", "greedy,sampled"]
    # Two of the four built-in categories keep the test fast; the others are the same code path.
    args += ["--categories", "code,math"]
    assert main(args, context=tiny_context) == EXIT_OK

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["greedy_check"]["passed"]
    assert {p["group"] for p in document["prompts"]} == {"code", "math"}
    assert len(document["prompts"]) == 4
    names = set(document["methods"])
    assert {"target", "spec-adaptive", "spec-k2", "ngram", "combined", "small"} <= names
    assert {"hf-target", "hf-assisted"} <= names
    skipped = {s["name"]: s["reason"] for s in document["skipped_methods"]}
    # llama-cpp-python is an optional extra: without it, its method is skipped with the reason.
    if importlib.util.find_spec("llama_cpp") is not None:
        assert "llamacpp" in names
        assert set(skipped) == {"llamacpp-spec"}
    else:
        assert "llamacpp" not in names
        assert set(skipped) == {"llamacpp", "llamacpp-spec"}
        assert "llama_cpp" in skipped["llamacpp"]
    # Every method ran every prompt in both modes, and each run has its text.
    assert len(document["runs"]) == len(names) * len(document["prompts"]) * 2
    assert all(isinstance(run["text"], str) for run in document["runs"])

    by_key = {(r["method"], r["prompt_id"], r["mode"]): r for r in document["runs"]}
    for (method, prompt_id, mode), run in by_key.items():
        if mode == "greedy" and method_spec(method).check is TargetCheck.EXACT:
            expected = by_key[("target", prompt_id, "greedy")]["generation"]["token_ids"]
            assert run["generation"]["token_ids"] == expected, method

    adaptive = next(
        s
        for s in document["summaries"]
        if (s["method"], s["mode"], s["group"]) == ("spec-adaptive", "greedy", "all")
    )
    assert 0.0 < adaptive["acceptance_rate"] <= 1.0
    assert adaptive["speedup"]["low"] <= adaptive["speedup"]["point"] <= adaptive["speedup"]["high"]
    assert document["cost"]["cost_ratio"] > 0
    assert {row["method"] for row in document["theory"]} >= {"spec-adaptive", "spec-k2"}

    markdown = (tmp_path / "results.md").read_text()
    assert "greedy check: passed" in markdown and "speedup in theory and achieved" in markdown
    for plot in PLOTS:
        assert (tmp_path / plot).stat().st_size > 0
    assert "greedy check passed" in capsys.readouterr().out


class WrongTokens:
    """Wraps a method and changes the last output token of every run."""

    def __init__(self, inner) -> None:
        self.spec = inner.spec
        self.inner = inner

    def generate(self, prompt_ids, sampling) -> Generation:
        generation = self.inner.generate(prompt_ids, sampling)
        *kept, last = generation.token_ids
        return Generation((*kept, last + 1), generation.wall_s, generation.first_token_s)


def test_a_greedy_mismatch_fails_the_run(
    tiny_context: BenchContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    real_build = local.build_methods

    def build_with_a_broken_method(specs, context, max_context_tokens):
        methods, skipped = real_build(specs, context, max_context_tokens)
        broken = [WrongTokens(m) if m.spec.name == "ngram" else m for m in methods]
        return broken, skipped

    monkeypatch.setattr(local, "build_methods", build_with_a_broken_method)
    args = bench_args(tmp_path) + ["--methods", "target,ngram", "--categories", "code"]
    assert main(args, context=tiny_context) == EXIT_GREEDY_MISMATCH

    output = capsys.readouterr().out
    assert "greedy check FAILED: 1 outputs differ" in output
    assert "ngram on builtin/code-write" in output
    document = json.loads((tmp_path / "results.json").read_text())
    (mismatch,) = document["greedy_check"]["mismatches"]
    assert mismatch["position"] == len(mismatch["expected_ids"]) - 1


def test_http_mode_compares_speculation_on_a_running_server(tmp_path: Path):
    from tests.api.support import build_tiny_engine, serve, shut_down

    served = serve(build_tiny_engine())
    try:
        args = bench_args(tmp_path) + ["--server", served.url]
        args += ["--concurrency", "1,2", "--compare-speculation", "--categories", "code,chat"]
        assert main(args) == EXIT_OK
    finally:
        shut_down(served)

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["kind"] == "http"
    settings = {(s["concurrency"], s["speculation"]) for s in document["summaries"]}
    assert settings == {(1, True), (1, False), (2, True), (2, False)}
    assert all(s["num_errors"] == 0 for s in document["summaries"])
    speculating = [s for s in document["summaries"] if s["speculation"]]
    assert all(s["speedup"] is not None and s["acceptance_rate"] > 0 for s in speculating)
    assert not [d for d in document["greedy_text_differences"] if d["exact"]]
    for plot in ("http_throughput.png", "http_latency.png"):
        assert (tmp_path / plot).stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--server", "http://10.1.2.3:8000"],
        ["--server", "http://example.com:8000"],
        ["--methods", "target,warp-drive"],
        ["--limit", "two"],
        ["--sampling", "beam"],
        ["--max-tokens", "0"],
        ["--draft-quant", "int3"],
        ["--draft-head-tokens", "-1"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str]):
    with pytest.raises(SystemExit) as exit_info:
        parse_options(argv)
    assert exit_info.value.code == EXIT_USAGE


def test_draft_cost_cuts_follow_the_server():
    """The bench's draft is the server's: same flags, same measured CPU defaults."""
    import torch

    from server.bench.__main__ import draft_options

    cpu = torch.device("cpu")
    auto = draft_options(parse_options([]), cpu)
    assert (auto.quantization, auto.head_tokens) == ("int8", 32768)
    plain = draft_options(parse_options(["--draft-quant", "none", "--draft-head-tokens", "0"]), cpu)
    assert (plain.quantization, plain.head_tokens) == ("none", None)


def test_loopback_servers_are_accepted():
    for url in ("http://127.0.0.1:8000", "http://localhost:1234", "http://[::1]:80"):
        assert parse_options(["--server", url]).server == url


def test_importing_the_bench_loads_no_heavy_library():
    probe = (
        "import sys, server.bench.__main__, server.bench.local, server.bench.output; "
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_limits_apply_per_category_with_overrides():
    chosen = load_prompts(("builtin",), None, parse_limits("1,code=2"))
    counts = Counter(prompt.category for prompt in chosen)
    assert counts == {"code": 2, "chat": 1, "rewrite": 1, "math": 1}
    only_math = load_prompts(("builtin",), ("math",), parse_limits("math=3"))
    assert [prompt.id for prompt in only_math] == [
        "builtin/math-muffins",
        "builtin/math-train",
        "builtin/math-tank",
    ]


def test_http_requests_bypass_both_caches():
    """Every phase sends the same prompts; a cache hit would measure memory, not decoding."""
    from server.bench.datasets import Prompt
    from server.bench.http_client import request_for

    prompt = Prompt(id="p", category="c", messages=None, text="Say hi.")
    _, body = request_for(prompt, 8, 0.0, None, True)
    assert body["cache"] == {"prefix": False, "response": False}
    assert body["speculative"] == {"enabled": True}
