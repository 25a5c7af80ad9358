"""TransNeXt's position bias on the CPU (`_GridPositionBias`): the chunked, recomputing MLP and the row-then-column
gather give the plain modules' bias and gradients to rounding, on odd, non-square grids and through both
attentions; graphs that torch.jit.trace captures keep the plain modules."""

import pytest
import torch
import torch.nn.functional as F

import attnzoo  # noqa: F401  (registers the families)
from attnzoo.backbones.skeletons import transnext

GRIDS = [((13, 7), (3, 2), (14, 14)), ((9, 11), (9, 11), (7, 7)), ((5, 3), (1, 1), (14, 14))]


def _official_cpb(query_hw, key_hw, pretrain_hw):
    """The official get_relative_position_cpb's construction: torch.unique over every (query, key) pair's offsets."""
    q_h, q_w = (torch.arange(n, dtype=torch.float32) for n in query_hw)
    k_h, k_w = (F.adaptive_avg_pool1d(q.unsqueeze(0), k).squeeze(0) for q, k in zip((q_h, q_w), key_hw))
    k_h, k_w = (a.reshape(-1) for a in torch.meshgrid(k_h, k_w, indexing="ij"))
    q_h, q_w = (a.reshape(-1) for a in torch.meshgrid(q_h, q_w, indexing="ij"))
    rel_h = (q_h[:, None] - k_h[None, :]) / (pretrain_hw[0] - 1) * 8
    rel_w = (q_w[:, None] - k_w[None, :]) / (pretrain_hw[1] - 1) * 8
    table, index = torch.unique(torch.stack([rel_h, rel_w], dim=-1).view(-1, 2), return_inverse=True, dim=0)
    return index, torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(torch.tensor(8.0))


@pytest.mark.parametrize("query_hw, key_hw, pretrain_hw", [*GRIDS, ((50, 76), (25, 38), (28, 28)),
                                                          ((23, 17), (5, 4), (56, 56))])
def test_tables_built_per_axis_equal_the_official_pairwise_unique(query_hw, key_hw, pretrain_hw):
    index, table = transnext.relative_position_cpb(query_hw, key_hw, pretrain_hw)
    official_index, official_table = _official_cpb(query_hw, key_hw, pretrain_hw)
    assert torch.equal(index, official_index.view(-1))
    assert torch.equal(table, official_table)


def _weight_grads(module):
    return [p.grad.clone() for p in (module.cpb_fc1.weight, module.cpb_fc1.bias, module.cpb_fc2.weight,
                                     module.cpb_fc2.bias)]  # fmt: skip


@pytest.mark.parametrize("query_hw, key_hw, pretrain_hw", GRIDS)
def test_grid_bias_equals_the_plain_bias_and_its_gradients(query_hw, key_hw, pretrain_hw, monkeypatch):
    # a small rows-per-step so the chunk loop runs several times on these small tables
    monkeypatch.setattr(transnext, "CPB_ROWS_PER_STEP", 5)
    torch.manual_seed(0)
    attention = transnext.AggregatedAttention(24, 3, 3, pretrain_hw=pretrain_hw).double()
    index, table = transnext.relative_position_cpb(query_hw, key_hw, pretrain_hw)
    n_query, n_key = query_hw[0] * query_hw[1], key_hw[0] * key_hw[1]
    grad = torch.randn(3, n_query, n_key, dtype=torch.float64)

    plain = attention.position_bias(index, table, n_query, n_key)
    plain.backward(grad)
    plain_grads = _weight_grads(attention)
    attention.zero_grad()
    grid = attention.grid_bias(query_hw, key_hw)
    assert grid.grad_fn is not None and "GridPositionBias" in type(grid.grad_fn).__name__
    grid.backward(grad)

    torch.testing.assert_close(grid, plain, rtol=1e-13, atol=1e-13)  # the blocked MLP may round differently
    for ours, theirs in zip(_weight_grads(attention), plain_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["aggregated", "full"])
def test_attentions_train_the_same_through_either_bias(kind, monkeypatch):
    """Both attentions at an odd, non-square grid, float64: the output and every parameter's gradient agree."""
    torch.manual_seed(0)
    if kind == "aggregated":
        attention = transnext.AggregatedAttention(24, 3, 3, sr_ratio=2, pretrain_hw=(14, 14))
    else:
        attention = transnext.FullAttention(24, 3, pretrain_hw=(7, 7))
    attention = attention.double().train()
    x = torch.randn(2, 9 * 7, 24, dtype=torch.float64)

    def run():
        attention.zero_grad(set_to_none=True)
        out = attention(x, 9, 7)
        (out * out).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in attention.named_parameters()}

    grid_out, grid_grads = run()
    monkeypatch.setattr(transnext, "_grid_bias_applies", lambda device: False)
    plain_out, plain_grads = run()
    torch.testing.assert_close(grid_out, plain_out, rtol=1e-12, atol=1e-12)
    assert grid_grads.keys() == plain_grads.keys() and "cpb_fc1.weight" in grid_grads
    for name, grad in grid_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_traced_graphs_keep_the_plain_bias():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = transnext.AggregatedAttention(24, 3, 3, pretrain_hw=(14, 14))

        def forward(self, x):
            return self.attention(x, 6, 5)

    assert transnext._grid_bias_applies(torch.device("cpu"))
    traced = torch.jit.trace(Block().eval(), torch.randn(1, 30, 24), check_trace=False)
    python_ops = [node.pyname() for node in traced.inlined_graph.nodes() if node.kind() == "prim::PythonOp"]
    assert "_GridPositionBias" not in python_ops
    assert any(node.kind() == "aten::index" for node in traced.inlined_graph.nodes())  # the plain gather
