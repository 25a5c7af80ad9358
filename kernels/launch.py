"""Which GPU a Triton launch is compiled for: the launch tables of kernels/flow.py and kernels/slab.py differ by target.

sm_80 (A100) runs ``tl.dot`` as ``mma.sync``: both operands sit in registers, and a 16-row operand tile is held whole
by every warp, so the flow and SLAB backward kernels that fit sm_90's registers (``wgmma`` reads its operands from
shared memory) spill on sm_80 with tensor-core dots; their sm_80 rows take fp32 FMA dots instead
(docs/kernels/README.md has the measurements). The launchers ask ``target_capability(device)``:

- a CUDA tensor: the device's compute capability (``torch.cuda.get_device_capability``), as ``major * 10 + minor``;
- anything else (Triton's CPU interpreter, or ``tools/kernel_check.py`` recording launches without a GPU): the target
  set by ``compiling_for(cc)`` (the tool records each workload once per target it compiles for), else sm_90.

No op of its own; imports nothing of Triton.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DEFAULT_TARGET", "compiling_for", "target_capability", "target_queries"]

DEFAULT_TARGET = 90
_compile_target: int | None = None
_queries = 0


def target_capability(device: torch.device) -> int:
    """The compute capability (e.g. 80, 90) the launch on ``device`` is compiled for."""
    global _queries
    _queries += 1
    if _compile_target is not None:
        return _compile_target
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    return DEFAULT_TARGET


def target_queries() -> int:
    """How many times a launcher asked for its target (tools/kernel_check.py re-records a workload per target only
    when its launchers asked)."""
    return _queries


@contextlib.contextmanager
def compiling_for(capability: int):
    """While active, every launcher chooses its options for ``capability`` whatever the tensors' device."""
    global _compile_target
    previous, _compile_target = _compile_target, int(capability)
    try:
        yield
    finally:
        _compile_target = previous
