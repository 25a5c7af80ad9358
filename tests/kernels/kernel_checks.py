"""Checks shared by the kernel tests: kernel-vs-reference closeness scaled to the dtype, and a watcher of the largest
tensor an op allocates (to prove a fused path never builds the big intermediate its reference or the official form
does)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# error relative to the largest reference magnitude, per output/gradient
TOLERANCE = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def assert_close_relative(got, ref, tol, what):
    scale = ref.float().abs().max().clamp_min(1e-12)
    err = ((got.float() - ref.float()).abs().max() / scale).item()
    assert err <= tol, f"{what}: max error {err:.2e} of the largest magnitude (tolerance {tol:.0e})"


class LargestTensor(TorchDispatchMode):
    """While active, records the largest tensor any op returns, in elements and in bytes (Triton's interpreter
    copies arguments through uint8 views, so byte counts are the fair measure there)."""

    def __init__(self):
        super().__init__()
        self.largest_elements = 0
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest_elements = max(self.largest_elements, t.numel())
                self.largest_bytes = max(self.largest_bytes, t.numel() * t.element_size())
        return out


def launches(function: type[torch.autograd.Function], call) -> int:
    """How many times ``call()`` ran ``function``'s forward (the Triton launchers), through its autograd.Function or
    through the op's kernel (both look the forward up on the class)."""
    original = function.__dict__["forward"]
    count = 0

    def counted(ctx, *args):
        nonlocal count
        count += 1
        return original.__func__(ctx, *args)

    function.forward = staticmethod(counted)
    try:
        call()
    finally:
        function.forward = original
    return count
