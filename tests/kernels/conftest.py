"""Run the Triton kernels in Triton's CPU interpreter when there is no GPU.

Triton decides when a function is decorated with `triton.jit`, that is at import, whether it is
interpreted; this holds for Triton's own library functions (tl.sum, tl.cumsum, tl.zeros, ...) as
much as for ours. When the whole suite runs, earlier conftest files may already have imported
Triton (transformers imports torch._dynamo, which imports Triton), so after switching the
interpreter on, this file re-executes the Triton library modules that define such functions and
drops kernel modules imported earlier, which the tests below then import again.

On a machine with CUDA the kernels are compiled and tested on the GPU instead (export
TRITON_INTERPRET=1 there to force the interpreter).
"""

import importlib
import os
import sys

import pytest
import torch


def _switch_triton_to_interpreter() -> None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if "triton.language" in sys.modules:
        import triton.language
        from triton.runtime.interpreter import InterpretedFunction

        interpreting = triton.knobs.runtime.interpret
        if interpreting and not isinstance(triton.language.standard.zeros, InterpretedFunction):
            importlib.reload(triton.language.standard)
            importlib.reload(triton.language.random)
            importlib.reload(triton.language)
    for module_name in [name for name in sys.modules if name.split(".")[0] == "kernels"]:
        del sys.modules[module_name]


if not torch.cuda.is_available():
    _switch_triton_to_interpreter()

from kernels._triton import TRITON_AVAILABLE, triton_interpreting  # noqa: E402


@pytest.fixture(scope="session")
def triton_device() -> torch.device:
    """Device whose tensors the Triton launchers accept here; skips when there is none."""
    if not TRITON_AVAILABLE:
        pytest.skip("Triton is not installed")
    if triton_interpreting():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("compiled Triton kernels need CUDA; set TRITON_INTERPRET=1 for the interpreter")
