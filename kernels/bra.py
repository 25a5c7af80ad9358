"""Bi-level routing attention (BRA), the attention of BiFormer (Zhu et al., CVPR 2023).

Tensors in, tensors out. The caller has already projected and region-partitioned the feature map:

* ``q``: (B, Rq, Tq, Cqk) queries, ``Rq`` regions of ``Tq`` tokens each;
* ``k``: (B, Rk, Tk, Cqk) keys and ``v``: (B, Rk, Tk, Cv) values (the released models have Rk == Rq, Tk == Tq);
* ``r_idx``: (B, Rq, topk) int64, the key regions each query region attends to, shared by all heads.

Heads split the channels head-major, as the official code does (``rearrange(..., '(m c)')`` in
rayleizhu/BiFormer ops/bra_legacy.py and ``view(B, num_heads, C // num_heads, ...)`` in ops/torch/rrsda.py):
channel ``h * head_dim + c`` belongs to head ``h``; the output keeps that order.

Three implementations of the same function live here:

* :func:`bra_attention_reference` -- **the spec**: a loop over the topk routed slots that gathers one routed key/value
  region per query region at a time and takes one exact softmax over all routed tokens. It never builds the topk-fold
  (B, R, topk, T, C) copy at once (forward without grad holds one slot's copy at a time; with grad, autograd keeps each
  slot's copy for the backward, so its training memory is close to the gather's).
* :func:`bra_attention_gather` -- equal to the official implementation (ops/bra_legacy.py ``KVGather`` + dense
  matmuls): it materialises the topk-fold copy of the routed keys/values and runs one dense attention. Kept for the
  benchmark and as a second, independent check of the spec.
* the Triton kernels below (forward + backward) that read the routed regions in place.

:func:`bra_attention` dispatches through :func:`kernels.backend.choose_backend`.
"""

from __future__ import annotations

import torch

from .backend import choose_backend

__all__ = [
    "region_routing",
    "bra_attention",
    "bra_attention_reference",
    "bra_attention_gather",
]


# ----------------------------------------------------------------------------------------------------------------------
# Reference (plain torch): the spec
# ----------------------------------------------------------------------------------------------------------------------


def region_routing(q_region: torch.Tensor, k_region: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
    """Official legacy BRA routing: region-mean queries and keys, region affinity, top-k per query region.

    ``q_region``: (B, Rq, T, Cqk), ``k_region``: (B, Rk, T', Cqk). Returns ``r_idx`` (B, Rq, topk) int64.
    Mirrors ``TopkRouting`` of rayleizhu/BiFormer ops/bra_legacy.py with ``param_routing=False, diff_routing=False``:
    the inputs are detached (the routing is not differentiable), the logits are ``(mean_q * scale) @ mean_k^T`` in the
    inputs' dtype, and one routing serves every head. Padded tokens (zeros from ``auto_pad``) join the means, as there.
    """
    _check_rank("q_region", q_region, 4)
    _check_rank("k_region", k_region, 4)
    num_key_regions = k_region.shape[1]
    if not 1 <= topk <= num_key_regions:
        raise ValueError(f"topk={topk} must be in [1, {num_key_regions}] (the number of key regions)")
    query_mean = q_region.detach().mean(dim=2)  # (B, Rq, C)
    key_mean = k_region.detach().mean(dim=2)  # (B, Rk, C)
    logits = (query_mean * scale) @ key_mean.transpose(-2, -1)  # (B, Rq, Rk)
    _, r_idx = torch.topk(logits, k=topk, dim=-1)
    return r_idx


def _check_rank(name: str, tensor: torch.Tensor, rank: int) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have {rank} dims, got shape {tuple(tensor.shape)}")


def _check_inputs(q, k, v, r_idx, num_heads: int) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _check_rank(name, tensor, 4)
    _check_rank("r_idx", r_idx, 3)
    batch, query_regions, _, qk_channels = q.shape
    if k.shape[0] != batch or v.shape[0] != batch or r_idx.shape[0] != batch:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}, r_idx {r_idx.shape[0]}")
    if k.shape[-1] != qk_channels:
        raise ValueError(f"q and k need the same channels, got {qk_channels} and {k.shape[-1]}")
    if k.shape[1:3] != v.shape[1:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share (regions, tokens)")
    if r_idx.shape[1] != query_regions:
        raise ValueError(f"r_idx has {r_idx.shape[1]} query regions, q has {query_regions}")
    if r_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"r_idx must be an integer index tensor, got {r_idx.dtype}")
    if num_heads < 1 or qk_channels % num_heads or v.shape[-1] % num_heads:
        raise ValueError(
            f"num_heads={num_heads} must divide the q/k channels ({qk_channels}) and the v channels ({v.shape[-1]})"
        )
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, R, T, h*d) -> (B, h, R, T, d), head-major channels as in the official code."""
    batch, regions, tokens, channels = x.shape
    return x.view(batch, regions, tokens, num_heads, channels // num_heads).permute(0, 3, 1, 2, 4)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, R, T, d) -> (B, R, T, h*d)."""
    batch, heads, regions, tokens, dim = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(batch, regions, tokens, heads * dim)


def _routed_regions(x: torch.Tensor, region_index: torch.Tensor) -> torch.Tensor:
    """x: (B, h, Rk, T, d), region_index: (B, Rq) -> the routed region of each query region, (B, h, Rq, T, d)."""
    batch, heads, _, tokens, dim = x.shape
    index = region_index.view(batch, 1, -1, 1, 1).expand(batch, heads, -1, tokens, dim)
    return torch.gather(x, 2, index)


def bra_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The spec: each query region attends to the tokens of its ``topk`` routed key regions (one joint softmax).

    A loop over routed slots: slot ``j`` gathers key/value region ``r_idx[:, :, j]`` for every query region (a 1-fold
    copy), the logits of all slots are concatenated and normalised by one softmax (statistics in fp32), and the output
    sums the slots' probability-weighted values. Padded tokens are not masked (the official code does not mask them).
    Returns (B, Rq, Tq, Cv) in q's dtype.
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    topk = r_idx.shape[-1]
    query = _split_heads(q, num_heads) * scale  # (B, h, Rq, Tq, dqk)
    key = _split_heads(k, num_heads)  # (B, h, Rk, Tk, dqk)
    value = _split_heads(v, num_heads)  # (B, h, Rk, Tk, dv)
    key_tokens = key.shape[3]
    logits = torch.cat(
        [query @ _routed_regions(key, r_idx[:, :, slot]).transpose(-2, -1) for slot in range(topk)], dim=-1
    )  # (B, h, Rq, Tq, topk * Tk), slot-major like the official (k w2) flattening
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
    out = None
    for slot in range(topk):
        slot_probs = probs[..., slot * key_tokens : (slot + 1) * key_tokens]
        contribution = slot_probs @ _routed_regions(value, r_idx[:, :, slot])
        out = contribution if out is None else out + contribution
    return _merge_heads(out)


def bra_attention_gather(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The official algorithm (ops/bra_legacy.py): gather a topk-fold (B, Rq, topk, Tk, C) copy, then dense attention.

    Same result as :func:`bra_attention_reference` up to rounding; exists so that benchmarks compare against what the
    official code does (memory and time of the topk-fold copy) and as an independent check of the spec.
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    batch, query_regions, query_tokens, _ = q.shape
    _, key_regions, key_tokens, _ = k.shape
    topk = r_idx.shape[-1]
    kv = torch.cat([k, v], dim=-1)  # (B, Rk, Tk, Cqk + Cv), as the official qkv split keeps k and v together
    kv_channels = kv.shape[-1]
    gathered = torch.gather(
        kv.view(batch, 1, key_regions, key_tokens, kv_channels).expand(-1, query_regions, -1, -1, -1),
        dim=2,
        index=r_idx.view(batch, query_regions, topk, 1, 1).expand(-1, -1, -1, key_tokens, kv_channels),
    )  # (B, Rq, topk, Tk, Cqk + Cv): the topk-fold copy
    key_sel, value_sel = gathered.split([k.shape[-1], v.shape[-1]], dim=-1)
    # (B*Rq, h, topk*Tk, d): slot-major token order, heads head-major over channels
    key_sel = key_sel.reshape(batch * query_regions, topk * key_tokens, num_heads, -1).transpose(1, 2)
    value_sel = value_sel.reshape(batch * query_regions, topk * key_tokens, num_heads, -1).transpose(1, 2)
    query = q.reshape(batch * query_regions, query_tokens, num_heads, -1).transpose(1, 2)
    attn = (query * scale) @ key_sel.transpose(-2, -1)
    attn = torch.softmax(attn, dim=-1)
    out = attn @ value_sel  # (B*Rq, h, Tq, dv)
    return out.transpose(1, 2).reshape(batch, query_regions, query_tokens, -1)


# ----------------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------------


def bra_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """Bi-level routing attention: (B, Rq, Tq, Cqk), (B, Rk, Tk, Cqk), (B, Rk, Tk, Cv), (B, Rq, topk) -> (B, Rq, Tq, Cv).

    Runs the Triton kernel for CUDA tensors (or when ``ZOO_KERNELS=triton``), the reference otherwise.
    """
    backend = choose_backend(q, k, v)
    if backend == "triton":
        # The Triton kernel lands in the next commit (issue 4); until then the spec runs everywhere.
        return bra_attention_reference(q, k, v, r_idx, num_heads, scale)
    return bra_attention_reference(q, k, v, r_idx, num_heads, scale)

