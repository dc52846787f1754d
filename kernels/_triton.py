"""Optional Triton import shared by the kernel modules.

Triton publishes wheels for Linux only, yet the torch twins in this package must work everywhere
(macOS laptops, aarch64 boxes). When Triton is missing, `triton.jit` turns a kernel into a stand-in
that refuses to launch and `tl.constexpr` stays a plain annotation, so every kernel module still
imports and its torch twin still runs.
"""

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

try:
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:
    TRITON_AVAILABLE = False

    class _UnlaunchableKernel:
        """What `triton.jit` returns when Triton is not installed."""

        def __init__(self, fn: Callable[..., Any]) -> None:
            self.fn = fn

        def __getitem__(self, grid: Any) -> Callable[..., None]:
            raise RuntimeError(f"{self.fn.__name__} needs Triton, which is not installed")

    class _Constexpr:
        """Stands in for `tl.constexpr`, both as an annotation and as a wrapped global."""

        def __init__(self, value: Any = None) -> None:
            self.value = value

    triton = SimpleNamespace(jit=_UnlaunchableKernel)
    tl = SimpleNamespace(constexpr=_Constexpr)

# Elements of one vocabulary row that a program handles per loop iteration. 1024 keeps each load
# wide (8 values per thread with 4 warps) while an int64 prefix sum over the chunk still fits in
# registers; results never depend on it (argmax and the fixed-point prefix sums are exact).
VOCAB_BLOCK = 1024


def triton_interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (its `TRITON_INTERPRET` setting)."""
    return TRITON_AVAILABLE and bool(triton.knobs.runtime.interpret)


def check_launch_device(device: torch.device) -> None:
    """Raise unless a Triton kernel can run on tensors living on `device`."""
    if not TRITON_AVAILABLE:
        raise RuntimeError("Triton is not installed; use the torch twin of this kernel")
    if device.type == "cuda" or (device.type == "cpu" and triton_interpreting()):
        return
    raise ValueError(
        f"Triton kernels need CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"
    )


def next_power_of_2(value: int) -> int:
    """Smallest power of two >= value (and >= 1): Triton block shapes must be powers of two."""
    return 1 << max(value - 1, 0).bit_length()
