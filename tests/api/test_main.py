"""`python -m server` end to end: tiny checkpoints on disk, a request, then Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.api.support import LOOPBACK, wait_until
from tests.conftest import make_tiny_hf_checkpoint

# Importing torch and transformers and loading two tiny models takes a few seconds.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 30.0
USAGE_ERROR = 2
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def run_server(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def is_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_serves_tiny_checkpoints_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    target = make_tiny_hf_checkpoint(tmp_path, "qwen2", seed=0)
    draft = make_tiny_hf_checkpoint(tmp_path, "qwen2", seed=1, num_hidden_layers=1)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    process = run_server(
        ["--target", str(target), "--draft", str(draft), "--dtype", "fp32", "--device", "cpu"]
        + ["--kv-cache-gb", "0.01", "--port", str(port), "--max-context", "256"]
    )
    try:
        assert wait_until(lambda: is_up(url) or process.poll() is not None, START_TIMEOUT_S)
        assert process.poll() is None, process.communicate()[0]

        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert [model["id"] for model in models] == [target.name, draft.name]
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            timeout=REQUEST_TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=STOP_TIMEOUT_S)

    assert process.returncode == 0, output
    for summary in ("models: target", "KV cache", "drafter combined", "listening on"):
        assert summary in output
    assert "stopping the engine thread" in output
    assert "Traceback" not in output


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    process = run_server(["--target", str(missing), "--no-draft", "--device", "cpu"])
    output, _ = process.communicate(timeout=START_TIMEOUT_S)
    assert process.returncode == USAGE_ERROR
    assert str(missing) in output
    assert "Traceback" not in output
