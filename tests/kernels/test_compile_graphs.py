"""What torch.compile and torch.export capture of the kernel-using models holds the kernel ops, on this CPU (issue 31).

Every kernel op is one ``attnzoo::`` torch.library op on every device (Agent's op is PyTorch's SDPA), so the graph
captured from CPU tensors is the graph a GPU runs: its op kernels, not the graph, pick the Triton or the reference
path. Checked per family, on a shrunk model (same classes and code paths as the registered variants) at batch 1 and a
small input:

* ``torch.compile(model, fullgraph=True)`` (a graph break is an error) with a backend that records dynamo's FX graph
  and runs it eagerly (no inductor code generation: fast): the graph holds as many of the family's op nodes as eager
  calls the op, at least one, and its output and input gradient equal eager's;
* through AOTAutograd (what inductor compiles), the backward graph holds the ``attnzoo::*_backward`` ops;
* ``torch.export`` of one model per op keeps those nodes (and ``run_decompositions()`` keeps the ``attnzoo::`` ones).

ONNX export decomposes the ops into their reference (tests/zoo/test_export_compile.py checks those files).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import attnzoo  # noqa: F401  (registers the families and the ops)

SDPA = "aten::scaled_dot_product_attention"

# name -> (constructor kwargs of a shrunk member, input size, the family's op nodes the graph must hold; a family's
# plain softmax stages, e.g. BiFormer's last and SLAB-Swin's, add SDPA nodes of their own)
MODELS = {
    "biformer_tiny": (dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), qk_dims=(16, 32, 64, 128), head_dim=16),
                      64, {"attnzoo::bra_forward"}),
    "agent_pvt_tiny": (dict(embed_dims=[16, 32, 64, 128], num_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1],
                            agent_num=[9, 16, 49, 49]), 224, {SDPA}),
    "agent_swin_tiny": (dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], agent_num=[9, 16, 49, 49]),
                        224, {SDPA}),
    "flowformer": (dict(embed_dim=[12, 24, 48, 96], depth=[1, 1, 1, 1], img_size=64), 64, {"attnzoo::flow_forward"}),
    "slab_swin_tiny": (dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]), 224,
                       {"attnzoo::slab_forward"}),
    "transnext_micro": (dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)), 64,
                        {"attnzoo::aggregated_forward"}),
    "moh_transnext_small_75": (dict(embed_dims=(24, 48, 96, 192), depths=(1, 1, 1, 1)), 64,
                               {"attnzoo::head_sparse_forward", "attnzoo::head_sparse_aggregated_forward",
                                "attnzoo::aggregated_forward"}),
}  # fmt: skip

EXPORTED = ["biformer_tiny", "agent_pvt_tiny", "flowformer", "slab_swin_tiny", "transnext_micro",
            "moh_transnext_small_75"]  # fmt: skip  (one model per op: BRA, SDPA, flow, SLAB, aggregated, MoH)


def _op_name(target) -> str | None:
    """``attnzoo::bra_forward`` for the op (overload or packet), ``aten::scaled_dot_product_attention`` for SDPA."""
    if target is F.scaled_dot_product_attention:
        return SDPA
    schema = getattr(target, "_schema", None)
    if schema is None:
        packet = getattr(target, "_qualified_op_name", None)
        return packet
    return schema.name


def graph_ops(graph: torch.fx.Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_function":
            name = _op_name(node.target)
            if name is not None and (name.startswith("attnzoo::") or name == SDPA):
                counts[name] = counts.get(name, 0) + 1
    return counts


class _CountCalls(TorchFunctionMode):
    """The kernel ops an eager forward calls (torch function level: SDPA before it dispatches, the attnzoo ops)."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _op_name(func)
        if name is not None and (name.startswith("attnzoo::") or name == SDPA):
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    kwargs, size, _ = MODELS[name]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    return model, torch.randn(1, 3, size, size)


def _eager_calls(model, x) -> dict[str, int]:
    with torch.no_grad(), _CountCalls() as counter:
        model(x)
    return counter.counts


@pytest.mark.parametrize("name", list(MODELS))
def test_fullgraph_compile_holds_the_ops_and_matches_eager(name):
    model, x = _model(name)
    graphs = []

    def record(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=record, fullgraph=True)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(x_compiled)
    assert len(graphs) == 1  # fullgraph: one graph, no break
    captured = graph_ops(graphs[0].graph)
    expected_ops = MODELS[name][2]
    assert expected_ops <= set(captured), f"{name}: the graph holds {captured}, expected {expected_ops}"
    assert captured == _eager_calls(model, x), f"{name}: graph nodes {captured} != eager calls"
    reference = model(x_eager)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    reference.sum().backward()
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", EXPORTED)
def test_export_keeps_the_ops(name):
    model, x = _model(name)
    program = torch.export.export(model, (x,))
    family_ops = MODELS[name][2]
    expected = {k: v for k, v in _eager_calls(model, x).items() if k in family_ops}
    assert set(expected) == family_ops
    assert {k: v for k, v in graph_ops(program.graph).items() if k in family_ops} == expected
    if SDPA not in family_ops:  # the attnzoo ops stay opaque through the default (core ATen) decompositions
        kept = graph_ops(program.run_decompositions().graph)
        assert {k: v for k, v in kept.items() if k in family_ops} == expected
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["flowformer", "biformer_tiny"])
def test_aot_backward_graph_holds_the_backward_ops(name):
    """Through AOTAutograd (what inductor compiles) the training step's forward graph holds the forward ops and its
    backward graph the registered ``attnzoo::*_backward`` ops, one per forward call (recording compilers, no
    inductor)."""
    from torch._dynamo.backends.common import aot_autograd

    model, x = _model(name)
    forward_graphs, backward_graphs = [], []
    backend = aot_autograd(fw_compiler=lambda gm, _: forward_graphs.append(gm) or gm.forward,
                           bw_compiler=lambda gm, _: backward_graphs.append(gm) or gm.forward)  # fmt: skip
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    compiled(x.clone().requires_grad_()).sum().backward()
    (family_op,) = MODELS[name][2]
    calls = _eager_calls(model, x)[family_op]
    assert graph_ops(forward_graphs[0].graph).get(family_op) == calls
    assert graph_ops(backward_graphs[0].graph).get(family_op.replace("_forward", "_backward")) == calls
