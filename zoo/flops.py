"""One operation counter for every family: GMACs of one forward pass, the number papers print as "GFLOPs".

``count_gflops`` runs the model once under ``torch.utils.flop_counter.FlopCounterMode`` and halves its FLOP total
(one multiply-accumulate = 2 FLOPs), so the result is in GMACs, the convention of the Swin/PoolFormer/FocalNet/BiFormer
tables. What is counted: matrix products and convolutions — linear layers, conv, mm/bmm/addmm/baddbmm, einsum
(lowered to bmm), and attention's two matmuls (q·kᵀ and attn·v), including ``scaled_dot_product_attention``, whose
fused CPU kernel torch's counter does not know (a formula for it is supplied here). What is not counted: softmax,
normalisation layers, activations, pooling, element-wise additions, gathers and top-k routing — the same exclusions as
fvcore, so numbers are comparable with the papers' within a few percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gflops"]

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of softmax(q kᵀ) v: two matmuls (the softmax itself is not counted)."""
    batch, heads, q_len, qk_dim = query_shape
    kv_len, v_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * q_len * kv_len * (qk_dim + v_dim)


# The fused CPU SDPA kernels have no formula in torch's counter and would count as zero.
_EXTRA_FORMULAS = {
    op: _sdpa_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable")
    if (op := getattr(aten, name, None)) is not None
}


def count_gflops(
    model: torch.nn.Module,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
) -> float:
    """GMACs of one forward pass of ``model`` on a ``(batch_size, *input_size)`` input (see the module docstring).

    ``input_size`` is ``(C, H, W)``; by default the model's ``pretrained_cfg['input_size']`` (else 3x224x224). The
    input is made on the model's device, so a model built under ``torch.device('meta')`` is counted without any
    arithmetic (families whose forward reads tensor values need a CPU model).
    """
    if input_size is None:
        input_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    inputs = torch.zeros(batch_size, *input_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            model(inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
