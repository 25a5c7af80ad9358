"""The kernel tests' premise: Triton is importable, and without a GPU its CPU interpreter is on (tests/conftest.py)."""

import os

import torch

from attnzoo.kernels import bra, tiles


def test_interpreter_is_on_without_gpu():
    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1", (
            "no GPU and TRITON_INTERPRET is not 1: tests/conftest.py must set it before kernels is imported"
        )
    assert tiles.triton is not None, "triton is not importable; the kernel tests need it (pip install triton)"
    assert bra.triton is not None, "attnzoo.kernels.bra could not import triton (pip install triton)"
