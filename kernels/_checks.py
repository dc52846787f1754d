"""Input checks shared by the launchers and torch twins; each failure is a ValueError naming the
argument, what was expected (dimension names as in the package docstring) and what arrived."""

from collections.abc import Collection

import torch


def check_tensor(
    name: str, tensor: torch.Tensor, dims: tuple[str, ...], dtypes: Collection[torch.dtype]
) -> None:
    """Check the number of dimensions (named by `dims`) and the dtype of one argument."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != len(dims):
        raise ValueError(
            f"{name} must have {len(dims)} dimensions [{', '.join(dims)}], "
            f"got shape {list(tensor.shape)}"
        )
    if tensor.dtype not in dtypes:
        allowed = ", ".join(str(dtype) for dtype in dtypes)
        raise ValueError(f"{name} must have dtype in ({allowed}), got {tensor.dtype}")


def check_shape(
    name: str, tensor: torch.Tensor, dims: tuple[str, ...], expected: tuple[int, ...]
) -> None:
    """Check that `tensor` has shape `expected`, whose entries are named by `dims`."""
    if tuple(tensor.shape) != expected:
        named = ", ".join(f"{dim}={size}" for dim, size in zip(dims, expected, strict=True))
        raise ValueError(f"{name} must have shape [{named}], got {list(tensor.shape)}")


def check_same_device(tensors: dict[str, torch.Tensor]) -> torch.device:
    """Check that all tensors live on one device and return it."""
    devices = {name: tensor.device for name, tensor in tensors.items()}
    first_name, device = next(iter(devices.items()))
    for name, other in devices.items():
        if other != device:
            raise ValueError(f"{name} is on {other} but {first_name} is on {device}")
    return device


def check_contiguous(tensors: dict[str, torch.Tensor]) -> None:
    """Kernels index rows by shape alone, so every tensor they read or write must be contiguous."""
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
