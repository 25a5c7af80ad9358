"""Which implementation an op runs: the Triton kernel or the plain-torch reference.

Rule: CUDA tensors and an importable Triton -> "triton"; anything else -> "reference".
``ZOO_KERNELS=reference|triton`` forces a path (tests force "triton" on the CPU together with
``TRITON_INTERPRET=1``, which runs the kernels in Triton's interpreter).
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("reference", "triton")


# Decided once at import (a plain constant, so torch.compile traces through choose_backend without guards on a cache).
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def forced_backend() -> str | None:
    value = os.environ.get("ZOO_KERNELS", "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f"ZOO_KERNELS={value!r} is not one of {BACKENDS}; unset it or pick one of those")
    return value


def choose_backend(*tensors: torch.Tensor) -> str:
    forced = forced_backend()
    if forced == "triton":
        if not triton_available():
            raise RuntimeError("ZOO_KERNELS=triton but triton cannot be imported; install triton or unset ZOO_KERNELS")
        on_cuda = all(t.is_cuda for t in tensors)
        if not on_cuda and not interpreting():
            raise RuntimeError(
                "ZOO_KERNELS=triton with CPU tensors needs TRITON_INTERPRET=1 (set before importing triton); "
                "or move the tensors to CUDA"
            )
        return "triton"
    if forced == "reference":
        return "reference"
    if tensors and all(t.is_cuda for t in tensors) and triton_available():
        return "triton"
    return "reference"


def cast_for_autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under ``torch.autocast``, the float32/16 inputs of an op in the autocast dtype (as autocast casts a matmul's
    inputs), else the inputs unchanged. The ops take one dtype, and under autocast a module hands them linear
    outputs in low precision next to float32 parameters (biases, temperatures)."""
    first = next(t for t in tensors if t is not None)
    device = first.device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    low = (torch.float32, torch.float16, torch.bfloat16)
    return tuple(t.to(dtype) if t is not None and t.dtype in low else t for t in tensors)
