"""The packaged Qwen2.5-Coder pair behind the real server: a coding answer, well speculated."""

from __future__ import annotations

from http import HTTPStatus

import pytest
import torch

from server.api.config import ServedModels
from server.engine.params import EngineConfig
from tests.api.support import serve, shut_down

PROMPT = "Write a Python function that returns the factorial of n."
# The function's `def` comes within the first dozen tokens; bf16 on a small CPU runs at a few
# seconds per step, so the answer is cut early.
MAX_TOKENS = 48
HTTP_TIMEOUT_S = 900.0
# Enough for one request of the pair in bf16; keeps the test's memory small.
REAL_KV_CACHE_BYTES = 256 << 20
MIN_ACCEPTANCE_RATE = 0.5


@pytest.mark.real
def test_packaged_pair_answers_a_coding_question_with_speculation() -> None:
    checkpoint = pytest.importorskip("models.checkpoint", reason="the checkpoint loader is missing")
    del checkpoint
    from models.packaged import DEFAULT_DRAFT, DEFAULT_TARGET
    from server.engine.loading import build_engine, load_pair, resolve_device

    pair = load_pair(DEFAULT_TARGET, DEFAULT_DRAFT, torch.bfloat16, resolve_device("auto"))
    engine = build_engine(pair, EngineConfig(kv_cache_bytes=REAL_KV_CACHE_BYTES))
    models = ServedModels(pair.target_name, pair.draft_name)
    served = serve(engine, models=models, http_timeout_s=HTTP_TIMEOUT_S)
    try:
        response = served.http.post(
            "/v1/chat/completions",
            json={
                "model": pair.target_name,
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
            },
        )
    finally:
        shut_down(served)
    assert response.status_code == HTTPStatus.OK, response.text
    body = response.json()
    assert "def " in body["choices"][0]["message"]["content"]
    speculative = body["speculative"]
    assert speculative["drafter"] == "model"
    assert speculative["acceptance_rate"] > MIN_ACCEPTANCE_RATE, speculative
