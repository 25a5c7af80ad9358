"""Every kernel op is a torch.library op (issue 31): ``torch.library.opcheck`` on each ``attnzoo::`` op, both paths.

``opcheck`` runs the op's schema, fake (meta) kernel, autograd registration and AOT-dispatch tests against its real
kernel: the fake kernel must give the real outputs' shapes, dtypes and strides (the saved statistics included), and
the registered backward the gradients autograd expects. The op's kernel picks its path like the old dispatchers
(``ZOO_KERNELS``): "reference" is the CPU path, "triton" the CUDA path (here in Triton's interpreter), so both
kernels are checked on this CPU. Small shapes: one program or a few per kernel.
"""

from __future__ import annotations

import pytest
import torch

import attnzoo.kernels  # noqa: F401  (registers the ops)
from attnzoo.kernels.bra import region_routing

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _leaf(*shape, dtype=torch.float32, positive=False):
    """A leaf with a strided last dim (every other element of a wider tensor), as the models' head views are."""
    x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype, device=DEVICE)[..., ::2]
    return (x.abs() if positive else x).requires_grad_()


def _bra():
    q, k, v = _leaf(1, 4, 5, 8), _leaf(1, 4, 5, 8), _leaf(1, 4, 5, 8)
    r_idx = region_routing(q, k, 2, 0.5)
    return torch.ops.attnzoo.bra_forward, (q, k, v, r_idx, 2, 0.5)


def _flow(causal: bool):
    q, k, v = _leaf(1, 2, 9, 4), _leaf(1, 2, 9, 4), _leaf(1, 2, 9, 4)
    return torch.ops.attnzoo.flow_forward, (q, k, v, causal, 1e-6, 1e-6)


def _slab():
    q, k, v = _leaf(1, 2, 7, 4, positive=True), _leaf(1, 2, 9, 4, positive=True), _leaf(1, 2, 9, 4)
    return torch.ops.attnzoo.slab_forward, (q, k, v, 1e-6)


def _aggregated_args(local_weights: bool):
    b, h, height, width, d, pool = 1, 2, 3, 4, 4, 4
    n = height * width
    tensors = (_leaf(b, h, n, d), _leaf(b, h, n, d), _leaf(b, h, n, d), _leaf(b, h, pool, d), _leaf(b, h, pool, d),
               _leaf(h, 9), _leaf(h, n, pool), _leaf(b, h, n, 9) if local_weights else None)  # fmt: skip
    return (*tensors, height, width, 3)


def _heads(b, n, h, k):
    """k distinct heads per token, in [0, h)."""
    return torch.rand(b, n, h, device=DEVICE).argsort(dim=-1)[..., :k]


def _aggregated():
    return torch.ops.attnzoo.aggregated_forward, _aggregated_args(local_weights=True)


def _head_sparse_aggregated():
    args = _aggregated_args(local_weights=False)
    return torch.ops.attnzoo.head_sparse_aggregated_forward, (*args, _heads(1, 12, 2, 1))


def _head_sparse():
    q, k, v = _leaf(1, 3, 6, 4), _leaf(1, 3, 5, 4), _leaf(1, 3, 5, 4)
    return torch.ops.attnzoo.head_sparse_forward, (q, k, v, _heads(1, 6, 3, 2), _leaf(3, 6, 5), 0.5)


CASES = {
    "aggregated": _aggregated,
    "head_sparse_aggregated": _head_sparse_aggregated,
    "head_sparse": _head_sparse,
    "bra": _bra,
    "flow": lambda: _flow(False),
    "flow_causal": lambda: _flow(True),
    "slab": _slab,
}


@pytest.mark.parametrize("path", ["reference", "triton"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_opcheck(name, path, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", path)
    torch.manual_seed(0)
    op, args = CASES[name]()
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("path", ["reference", "triton"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_opcheck(name, path, monkeypatch):
    """The backward op on what the forward op saved: its fake kernel gives the real gradients' layouts (what
    torch.compile's AOT backward graph relies on)."""
    monkeypatch.setenv("ZOO_KERNELS", path)
    torch.manual_seed(0)
    op, args = CASES[name]()
    out, saved = op(*args)
    backward = getattr(torch.ops.attnzoo, op.__name__.replace("_forward", "_backward"))
    plain = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
    grad_out = torch.randn_like(out)
    torch.library.opcheck(backward, (grad_out, *plain, out.detach(), [s.detach() for s in saved]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_backward_is_the_gradient(name):
    """The registered backward is the gradient (CPU path: the forward recomputed and differentiated, BRA's chunked
    backward, the aggregated attention's own): gradcheck in float64 on a tiny case (fast mode: random projections)."""
    torch.manual_seed(0)
    op, args = CASES[name]()
    args = tuple(a.detach().double().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a
                 for a in args)  # fmt: skip
    tensors = [i for i, a in enumerate(args) if torch.is_tensor(a) and a.requires_grad]

    def out_of(*inputs):
        full = list(args)
        for i, t in zip(tensors, inputs):
            full[i] = t
        return op(*full)[0]

    assert torch.autograd.gradcheck(out_of, tuple(args[i] for i in tensors), eps=1e-6, atol=1e-6, fast_mode=True)
