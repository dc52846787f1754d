import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import kernels
from kernels._triton import TRITON_AVAILABLE
from kernels.greedy_acceptance import greedy_accept_torch
from kernels.inverse_cdf import sample_from_probs_torch, sample_from_probs_triton
from tests.kernels.cases import emitted

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def test_use_triton_only_on_cuda():
    assert not kernels.use_triton(torch.device("cpu"))
    assert kernels.use_triton(torch.device("cuda")) == TRITON_AVAILABLE


def test_cpu_tensors_go_to_the_torch_twins():
    generator = torch.Generator().manual_seed(0)
    target_logits = torch.randn(3, 3, 11, generator=generator)
    draft_token_ids = target_logits.argmax(dim=-1)[:, :2]
    num_draft_tokens = torch.tensor([2, 1, 0])
    dispatched = kernels.greedy_accept(draft_token_ids, num_draft_tokens, target_logits)
    twin = greedy_accept_torch(draft_token_ids, num_draft_tokens, target_logits)
    assert emitted(*dispatched) == emitted(*twin)
    assert kernels.target_argmax(target_logits).tolist() == target_logits.argmax(-1).tolist()

    probs = torch.softmax(target_logits[:, 0], dim=-1)
    uniforms = torch.rand(3, generator=generator)
    expected = sample_from_probs_torch(probs, uniforms).tolist()
    assert kernels.sample_from_probs(probs, uniforms).tolist() == expected


def test_launchers_refuse_devices_triton_cannot_run_on(triton_device):
    meta = torch.device("meta")
    probs, uniforms = torch.ones(2, 3, device=meta), torch.zeros(2, device=meta)
    with pytest.raises(ValueError, match="Triton kernels need CUDA tensors"):
        sample_from_probs_triton(probs, uniforms)


def test_package_imports_without_triton_and_without_other_layers():
    # A None entry in sys.modules makes `import triton` raise ImportError, as on macOS.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None
        import torch
        import kernels
        from kernels.inverse_cdf import sample_from_probs_triton

        assert not kernels.use_triton(torch.device("cuda"))
        probs = torch.tensor([[0.0, 1.0]])
        assert kernels.sample_from_probs(probs, torch.tensor([0.5])).tolist() == [1]
        try:
            sample_from_probs_triton(probs, torch.tensor([0.5]))
        except RuntimeError as error:
            assert "Triton is not installed" in str(error)
        else:
            raise AssertionError("the launcher ran without Triton")
        assert not {"models", "server"} & set(sys.modules), "kernels imported another layer"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
