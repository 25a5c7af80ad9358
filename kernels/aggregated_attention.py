"""Aggregated attention, the attention core of TransNeXt (Shi, CVPR 2024) and of MoH-ViT (Jin et al., 2024).

Each query pixel attends, through ONE softmax, to the keys of its ``window_size x window_size`` neighbourhood
(centred, zero-padded by ``window_size // 2``: positions outside the map are masked out) and to ``P`` pooled keys::

    logit_local[i, j] = q_i . k_{nb(i, j)} + local_bias[j]        (-inf where nb(i, j) is outside the map)
    logit_pool[i, p]  = q_i . kp_p + pool_bias[i, p]
    a = softmax([logit_local[i, :], logit_pool[i, :]])            (L = window_size**2 local + P pooled entries)
    out_i = sum_j (a_local[i, j] + local_weights[i, j]) v_{nb(i, j)} + sum_p a_pool[i, p] vp_p

``local_weights`` is TransNeXt's "dynamic local bias" (``q_norm @ learnable_tokens + learnable_bias``), added to the
local attention weights after the softmax; outside-the-map neighbours contribute nothing (their values are the
zero padding in the official unfold). Window j runs row-major over the offsets (dy, dx), dy, dx in
[-window_size // 2, window_size // 2], as ``nn.Unfold`` and the ``swattention`` kernels order them.

The cut (what the module keeps): projections, the L2 normalisation of q and k, the query embedding, softplus of the
temperature, the length scale (:func:`length_scale`), pooling, the CPB MLP and its index gather, the dynamic local
bias, MoH gating, dropout and the output projection. So the caller passes ``q = (normalize(q) + query_embedding) *
softplus(temperature) * length_scale`` and l2-normalised keys, exactly the tensors the official code multiplies.

Official code: DaiShiResearch/TransNeXt ``classification/attention_native.py`` (unfold + masked_fill, the spec
reproduced by :func:`aggregated_attention_reference`) and ``attention_cuda.py`` with the ``swattention`` extension
(``qk_rpb`` and ``av`` kernels: the same math without the unfold); SkyworkAI/MoH ``MoH-ViT/attention_native.py`` /
``attention_cuda.py`` (identical core, plus head gating after it). Attention dropout is not part of this op (every
released recipe has ``attn_drop_rate=0``); a module that needs it in training uses the reference with its own dropout.

In this file, in order: the reference (plain torch, the official order of operations: the spec, used by tests
only), the CPU path (:func:`aggregated_attention_cpu`: shifted views of the padded maps and its own backward, the
non-Triton branch of the dispatcher), the Triton kernels, the autograd.Function, and :func:`aggregated_attention`,
which dispatches through
:func:`attnzoo.kernels.backend.choose_backend`; then :func:`head_sparse_aggregated_attention`, MoH's gated variant (the
same kernels restricted to the (token, head) pairs a router selected, as ``attnzoo.kernels.moh`` does for full attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import (
    cast_for_autocast,
    choose_backend,
    forced_backend,
    function_path,
    interpreting,
    kernel_op,
    recompute_path,
)
from .launch import target_capability
from .moh import _head_groups, _selection, _slots, dense_gates
from .tiles import jit as _jit
from .tiles import matmul, tl, triton

__all__ = [
    "aggregated_attention",
    "aggregated_attention_cpu",
    "aggregated_attention_reference",
    "AggregatedAttentionShiftedFunction",
    "head_sparse_aggregated_attention",
    "head_sparse_aggregated_attention_cpu",
    "AggregatedAttentionFunction",
    "length_scale",
    "window_valid",
    "TRITON_MAX_HEAD_DIM",
]

TRITON_MAX_HEAD_DIM = 128


# ----------------------------------------------------------------------------------------------------------------
# Shapes and the official constants
# ----------------------------------------------------------------------------------------------------------------


def window_valid(height: int, width: int, window_size: int, device=None) -> torch.Tensor:
    """(H*W, L) bool: whether window entry j of pixel i lies inside the map (the official ``padding_mask`` negated)."""
    half = window_size // 2
    offsets = torch.arange(-half, half + 1, device=device)
    rows = torch.arange(height, device=device)[:, None] + offsets[None, :]  # (H, ws)
    cols = torch.arange(width, device=device)[:, None] + offsets[None, :]  # (W, ws)
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]  # (H, W, ws, ws)
    return valid.reshape(height * width, window_size * window_size)


def length_scale(height: int, width: int, window_size: int, pool_len: int, device=None) -> torch.Tensor:
    """(H*W, 1) fp32 ``log(valid window entries + pool_len)``: the official ``seq_length_scale`` buffer.

    Computed for the actual map, so it equals the official buffer at the model's ``input_resolution`` (the
    official modules fix it there) and stays defined at other sizes.
    """
    count = window_valid(height, width, window_size, device).sum(dim=1, keepdim=True).float()
    return torch.log(count + pool_len)


def _check_inputs(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                  window_size) -> None:  # fmt: skip
    named = {"q": q, "k_local": k_local, "v_local": v_local, "k_pool": k_pool, "v_pool": v_pool}
    for name, t in named.items():
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, tokens, dim); got shape {tuple(t.shape)}")
    b, h, n, d = q.shape
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be odd and positive (a centred window); got {window_size}")
    if height * width != n:
        raise ValueError(f"height * width = {height} * {width} must equal the {n} query tokens of q")
    if k_local.shape != (b, h, n, d):
        raise ValueError(f"k_local must match q's shape {tuple(q.shape)}; got {tuple(k_local.shape)}")
    dv = v_local.shape[3]
    if v_local.shape[:3] != (b, h, n):
        raise ValueError(f"v_local must be (B, h, N, dv) = ({b}, {h}, {n}, dv); got {tuple(v_local.shape)}")
    p = k_pool.shape[2]
    if k_pool.shape != (b, h, p, d) or v_pool.shape != (b, h, p, dv):
        raise ValueError(
            f"k_pool must be (B, h, P, d) = ({b}, {h}, P, {d}) and v_pool (B, h, P, dv) with dv={dv}; got "
            f"{tuple(k_pool.shape)} and {tuple(v_pool.shape)}"
        )
    window = window_size * window_size
    if local_bias.shape != (h, window):
        raise ValueError(f"local_bias must be (heads, window_size**2) = ({h}, {window}); got {tuple(local_bias.shape)}")
    if pool_bias.shape != (h, n, p):
        raise ValueError(f"pool_bias must be (heads, tokens, pooled) = ({h}, {n}, {p}); got {tuple(pool_bias.shape)}")
    if local_weights is not None and local_weights.shape != (b, h, n, window):
        raise ValueError(
            f"local_weights must be (B, h, N, window_size**2) = ({b}, {h}, {n}, {window}); "
            f"got {tuple(local_weights.shape)}"
        )
    tensors = [q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias]
    if local_weights is not None:
        tensors.append(local_weights)
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError(f"all inputs must share a dtype; got {sorted({str(t.dtype) for t in tensors})}")
    if len({t.device for t in tensors}) != 1:
        raise ValueError("all inputs must be on one device")


# ----------------------------------------------------------------------------------------------------------------
# Reference (plain torch): the spec
# ----------------------------------------------------------------------------------------------------------------


def aggregated_attention_reference(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    local_bias: torch.Tensor,
    pool_bias: torch.Tensor,
    local_weights: torch.Tensor | None,
    height: int,
    width: int,
    window_size: int,
) -> torch.Tensor:
    """The official native computation (unfold, masked_fill(-inf), one softmax over the concatenation), in the
    input dtype. Materialises the (B, h, N, d + dv, L) unfolded windows, as the official native code does.
    Returns (B, h, N, dv)."""
    _check_inputs(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                  window_size)  # fmt: skip
    b, h, n, d = q.shape
    dv = v_local.shape[3]
    window = window_size * window_size
    kv = torch.cat([k_local, v_local], dim=-1).permute(0, 1, 3, 2).reshape(b, h * (d + dv), height, width)
    unfolded = F.unfold(kv, window_size, padding=window_size // 2, stride=1)
    unfolded = unfolded.reshape(b, h, d + dv, window, n).permute(0, 1, 4, 2, 3)  # (B, h, N, d + dv, L)
    k_win, v_win = unfolded.split([d, dv], dim=3)
    padding_mask = ~window_valid(height, width, window_size, q.device)
    attn_local = ((q.unsqueeze(-2) @ k_win).squeeze(-2) + local_bias.unsqueeze(1)).masked_fill(
        padding_mask, float("-inf")
    )
    attn_pool = q @ k_pool.transpose(-2, -1) + pool_bias
    attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
    attn_local, attn_pool = torch.split(attn, [window, k_pool.shape[2]], dim=-1)
    if local_weights is not None:
        attn_local = local_weights + attn_local
    x_local = (attn_local.unsqueeze(-2) @ v_win.transpose(-2, -1)).squeeze(-2)
    return x_local + attn_pool @ v_pool


# ----------------------------------------------------------------------------------------------------------------
# The CPU path (any device without Triton): shifted views of the padded maps, never the unfolded windows
# ----------------------------------------------------------------------------------------------------------------
#
# The maps are kept channel-first, (B, h, c, H, W): window entry j = (dy, dx) of every pixel at once is the view
# ``padded[..., dy:dy + H, dx:dx + W]`` of the zero-padded key / value map, so each of the L window steps is one
# elementwise product reduced over the channels (logits, dp) or one multiply-add into the output (values) or into
# the padded gradient maps (dk, dv: the same view, written in place). The pooled keys are attended in query blocks
# of at most CPU_CHUNK_LOGITS logits (one matmul per block), with the softmax's running maximum started from the
# local logits'. The autograd.Function saves the inputs, the output and the log-sum-exp (B, h, N) and recomputes
# the probabilities in the backward, flash-attention style: nothing of size N x L x d is ever made, and nothing of
# size N x P is kept beyond the pool_bias input itself (the official code keeps the softmax, B x h x N x (L + P)).
# Head-sparse (MoH, ``routes``): the local window stays dense (L entries per pair, cheap), the pooled keys run for the
# routed (token, head) rows only, gathered per head group; the output is zero at the other pairs.

CPU_CHUNK_LOGITS = 1 << 20
"""Pooled logits one query block of the CPU path holds (4 MiB in fp32), over batch and heads."""


def _channels_first(x: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, h, N, c) -> contiguous (B, h, c, H, W) in ``dtype``."""
    b, h, n, c = x.shape
    return x.transpose(2, 3).to(dtype).contiguous().view(b, h, c, height, width)


def _padded(x: torch.Tensor, height: int, width: int, half: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, h, N, c) -> zero-padded (B, h, c, H + 2 half, W + 2 half)."""
    return F.pad(_channels_first(x, height, width, dtype), (half, half, half, half))


def _shift(padded: torch.Tensor, j: int, height: int, width: int, window_size: int) -> torch.Tensor:
    """Window entry j of every pixel: the (B, h, c, H, W) view of the padded map at offset (j // ws, j % ws)."""
    dy, dx = divmod(j, window_size)
    return padded[..., dy : dy + height, dx : dx + width]


def _local_logits_cpu(qg, k_pad, local_bias, height, width, window_size) -> torch.Tensor:
    """(B, h, L, H, W): q . k_nb(i, j) + local_bias[j], -inf where the neighbour lies outside the map."""
    b, h = qg.shape[:2]
    window = window_size * window_size
    logits = qg.new_empty(b, h, window, height, width)
    for j in range(window):
        torch.sum(qg * _shift(k_pad, j, height, width, window_size), dim=2, out=logits[:, :, j])
    logits += local_bias.to(qg.dtype).view(1, h, window, 1, 1)
    outside = ~window_valid(height, width, window_size, qg.device).t().reshape(window, height, width)
    return logits.masked_fill_(outside, float("-inf"))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _take(flat_rows: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """(B, h * N, c) rows at ``flat`` (B, R) -> (B, R, c)."""
    return flat_rows.gather(1, _rows_index(flat, flat_rows.shape[-1]))


def _rows_index(flat: torch.Tensor, channels: int) -> torch.Tensor:
    return flat.unsqueeze(-1).expand(-1, -1, channels)


def _query_blocks(n: int, batch_heads: int, pool_len: int):
    step = max(1, CPU_CHUNK_LOGITS // max(1, batch_heads * pool_len))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


class AggregatedAttentionShiftedFunction(torch.autograd.Function):
    """The CPU path's forward and backward (see the comment above); arguments as :func:`aggregated_attention`."""

    @staticmethod
    def forward(ctx, q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                window_size, routes=None):  # fmt: skip
        b, h, n, d = q.shape
        dv = v_local.shape[3]
        window, half = window_size * window_size, window_size // 2
        ct = _compute_dtype(q.dtype)
        qg = _channels_first(q, height, width, ct)
        logits = _local_logits_cpu(qg, _padded(k_local, height, width, half, ct), local_bias, height, width,
                                   window_size)  # fmt: skip
        del qg
        logits = logits.view(b, h, window, n)
        m = logits.amax(dim=2)  # (B, h, N): the local maximum; the centre is always inside the map
        new = torch.zeros if routes is not None else torch.empty  # head-sparse: unrouted pairs have no pooled term
        denom = new(b, h, n, dtype=ct, device=q.device)
        out_pool = new(b, h, n, dv, dtype=ct, device=q.device)
        kp, vp, pb = k_pool.to(ct), v_pool.to(ct), pool_bias.to(ct)
        if routes is not None:  # the pooled keys for the routed (token, head) pairs only, a head group at a time
            q_flat, pb_flat = q.to(ct).reshape(b, h * n, d), pb.reshape(h * n, -1)
            for heads, flat in routes.groups:
                g = len(heads)
                s = torch.matmul(_take(q_flat, flat).view(b, g, -1, d), kp[:, heads].transpose(-2, -1))
                s = s.add_(pb_flat[flat].view(s.shape))
                m_rows = torch.maximum(m.view(b, h * n).gather(1, flat).view(s.shape[:3]), s.amax(dim=-1))
                s = s.sub_(m_rows.unsqueeze(-1)).exp_()
                m.view(b, h * n).scatter_(1, flat, m_rows.view(b, -1))
                denom.view(b, h * n).scatter_(1, flat, s.sum(dim=-1).view(b, -1))
                o_rows = torch.matmul(s, vp[:, heads]).view(b, -1, dv)
                out_pool.view(b, h * n, dv).scatter_(1, _rows_index(flat, dv), o_rows)
                del s
        for start, stop in _query_blocks(n, b * h, k_pool.shape[2]) if routes is None else ():
            s = torch.matmul(q[:, :, start:stop].to(ct), kp.transpose(-2, -1)).add_(pb[:, start:stop])
            m_blk = torch.maximum(m[:, :, start:stop], s.amax(dim=-1))
            m[:, :, start:stop] = m_blk
            s = s.sub_(m_blk.unsqueeze(-1)).exp_()
            denom[:, :, start:stop] = s.sum(dim=-1)
            out_pool[:, :, start:stop] = torch.matmul(s, vp)
            del s
        logits = logits.sub_(m.unsqueeze(2)).exp_()  # local exp(logit - max)
        denom += logits.sum(dim=2)
        logits /= denom.unsqueeze(2)  # local probabilities
        out_pool /= denom.unsqueeze(-1)
        lse = denom.log_().add_(m)
        del m, denom
        if local_weights is not None:
            logits += local_weights.to(ct).transpose(2, 3)
        weights = logits.view(b, h, window, 1, height, width)
        v_pad = _padded(v_local, height, width, half, ct)
        out_local = weights[:, :, 0] * _shift(v_pad, 0, height, width, window_size)
        for j in range(1, window):
            out_local.addcmul_(weights[:, :, j], _shift(v_pad, j, height, width, window_size))
        del weights, logits, v_pad
        out = torch.empty(b, n, h, dv, dtype=q.dtype, device=q.device).transpose(1, 2)  # (B, N, h, dv) memory
        out.copy_(out_pool.add_(out_local.view(b, h, dv, n).transpose(2, 3)))
        if routes is not None:
            out.mul_(routes.chosen.unsqueeze(-1))  # zero at the pairs the router did not select
        ctx.save_for_backward(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, lse, out)
        ctx.geometry = (height, width, window_size)
        ctx.routes = routes
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, lse, out = ctx.saved_tensors
        height, width, window_size = ctx.geometry
        routes = ctx.routes
        b, h, n, d = q.shape
        dv = v_local.shape[3]
        window, half = window_size * window_size, window_size // 2
        ct = _compute_dtype(q.dtype)
        has_lw = local_weights is not None
        if routes is not None:  # the output is zero at unselected pairs: nothing flows back from them
            grad_out = grad_out * routes.chosen.unsqueeze(-1)
        qg = _channels_first(q, height, width, ct)
        k_pad = _padded(k_local, height, width, half, ct)
        v_pad = _padded(v_local, height, width, half, ct)
        dog = _channels_first(grad_out, height, width, ct)  # (B, h, dv, H, W)
        probs = _local_logits_cpu(qg, k_pad, local_bias, height, width, window_size)
        probs = probs.sub_(lse.view(b, h, 1, height, width)).exp_()  # (B, h, L, H, W)
        dp = torch.empty_like(probs)
        for j in range(window):
            torch.sum(dog * _shift(v_pad, j, height, width, window_size), dim=2, out=dp[:, :, j])
        # delta_i = sum over every entry of p dp = dO_i . (out_i - sum_j local_weights_ij v_nb(i, j))
        delta = (grad_out.to(ct) * out.to(ct)).sum(dim=-1)  # (B, h, N)
        lw = local_weights.to(ct).transpose(2, 3).reshape(b, h, window, height, width) if has_lw else None
        if has_lw:
            delta -= (lw * dp).sum(dim=2).view(b, h, n)
        d_lw = dp.view(b, h, window, n).transpose(2, 3).to(q.dtype) if has_lw else None
        # dv at the neighbours: (p + local_weights) dO; ds = p (dp - delta)
        dv_pad = torch.zeros_like(v_pad)
        weights = probs + lw if has_lw else probs
        for j in range(window):
            _shift(dv_pad, j, height, width, window_size).addcmul_(weights[:, :, j].unsqueeze(2), dog)
        del weights, v_pad, lw
        ds = probs.mul_(dp - delta.view(b, h, 1, height, width))  # (B, h, L, H, W), 0 outside the map
        del dp
        d_local_bias = ds.sum(dim=(0, 3, 4))
        dqg = torch.zeros_like(qg)
        dk_pad = torch.zeros_like(k_pad)
        for j in range(window):
            ds_j = ds[:, :, j].unsqueeze(2)
            dqg.addcmul_(ds_j, _shift(k_pad, j, height, width, window_size))
            _shift(dk_pad, j, height, width, window_size).addcmul_(ds_j, qg)
        del ds, k_pad, qg
        dq = dqg.view(b, h, d, n).transpose(2, 3)  # (B, h, N, d), channel-first memory
        del dqg
        dk = dk_pad[..., half : half + height, half : half + width].reshape(b, h, d, n).transpose(2, 3)
        dvl = dv_pad[..., half : half + height, half : half + width].reshape(b, h, dv, n).transpose(2, 3)
        del dk_pad, dv_pad
        # the pooled keys, in query blocks: p recomputed from the log-sum-exp
        kp, vp, pb = k_pool.to(ct), v_pool.to(ct), pool_bias.to(ct)
        dkp = torch.zeros(kp.shape, dtype=ct, device=q.device)
        dvp = torch.zeros(vp.shape, dtype=ct, device=q.device)
        dpb = (torch.zeros if routes is not None else torch.empty)(pool_bias.shape, dtype=ct, device=q.device)
        if routes is not None:
            dq = dq.contiguous()
            q_flat, do_flat = q.to(ct).reshape(b, h * n, d), grad_out.to(ct).reshape(b, h * n, dv)
            pb_flat = pb.reshape(h * n, -1)
            dq_flat, dpb_flat = dq.view(b, h * n, d), dpb.view(h * n, -1)
            for heads, flat in routes.groups:
                g = len(heads)
                q_rows = _take(q_flat, flat).view(b, g, -1, d)
                do_rows = _take(do_flat, flat).view(b, g, -1, dv)
                p = torch.matmul(q_rows, kp[:, heads].transpose(-2, -1))
                lse_rows = lse.view(b, h * n).gather(1, flat).view(*p.shape[:3], 1)
                p = p.add_(pb_flat[flat].view(p.shape)).sub_(lse_rows).exp_()
                dvp.index_add_(1, heads, torch.matmul(p.transpose(-2, -1), do_rows))
                ds = torch.matmul(do_rows, vp[:, heads].transpose(-2, -1))
                ds = ds.sub_(delta.view(b, h * n).gather(1, flat).view(*p.shape[:3], 1)).mul_(p)
                del p
                dq_flat.scatter_add_(1, _rows_index(flat, d), torch.matmul(ds, kp[:, heads]).view(b, -1, d))
                dkp.index_add_(1, heads, torch.matmul(ds.transpose(-2, -1), q_rows))
                dpb_flat.index_add_(0, flat.reshape(-1), ds.reshape(-1, ds.shape[-1]))
                del ds
        for start, stop in _query_blocks(n, b * h, k_pool.shape[2]) if routes is None else ():
            q_blk = q[:, :, start:stop].to(ct)
            do_blk = grad_out[:, :, start:stop].to(ct)
            p = torch.matmul(q_blk, kp.transpose(-2, -1)).add_(pb[:, start:stop])
            p = p.sub_(lse[:, :, start:stop].unsqueeze(-1)).exp_()
            dvp += torch.matmul(p.transpose(-2, -1), do_blk)
            ds = torch.matmul(do_blk, vp.transpose(-2, -1)).sub_(delta[:, :, start:stop].unsqueeze(-1)).mul_(p)
            del p
            dq[:, :, start:stop] += torch.matmul(ds, kp)
            dkp += torch.matmul(ds.transpose(-2, -1), q_blk)
            dpb[:, start:stop] = ds.sum(dim=0)
            del ds
        grads = (dq, dk, dvl, dkp, dvp, d_local_bias, dpb)
        grads = tuple(g.to(t.dtype) for g, t in zip(grads, (q, k_local, v_local, k_pool, v_pool, local_bias,
                                                             pool_bias)))  # fmt: skip
        return (*grads, d_lw, None, None, None, None)


def aggregated_attention_cpu(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    local_bias: torch.Tensor,
    pool_bias: torch.Tensor,
    local_weights: torch.Tensor | None,
    height: int,
    width: int,
    window_size: int,
) -> torch.Tensor:
    """The non-Triton path of :func:`aggregated_attention` (every CPU, any GPU without Triton): the same arguments
    and result, computed from shifted views of the zero-padded key / value maps with its own backward
    (:class:`AggregatedAttentionShiftedFunction`), so neither the unfolded windows nor per-window copies are ever
    made, and the (N, P) pooled logits exist one query block at a time. Float16 / bfloat16 inputs are computed in
    float32 and returned in their dtype; float64 stays float64 (equal to the reference to rounding)."""
    _check_inputs(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                  window_size)  # fmt: skip
    return AggregatedAttentionShiftedFunction.apply(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias,
                                                    local_weights, height, width, window_size)  # fmt: skip


SPARSE_MIN_POOLED_LOGITS = 1 << 19
"""The head-sparse CPU path gathers the routed pairs only when the dense pooled logits (B x h x N x P) reach this
many: below it the gathers cost more than the skipped pairs (MoH-S stage 3 at 224: 0.12M at batch 1, dense)."""

SPARSE_MAX_ROW_FRACTION = 0.9
"""... and when the gathered rows (the routed pairs plus each head group's padding) are at most this share of the
dense h x N rows: otherwise the dense pass with the gates after it is the cheaper one."""


class _Routes:
    """The router's selection for the CPU path: ``chosen`` (B, h, N) float 0/1 and, per group of heads of similar load,
    ``(heads (G,), flat (B, G * cap))``: the flat (head * N + token) rows that group attends (selected tokens first,
    padded with unselected ones to the group's largest count)."""

    def __init__(self, chosen, groups):
        self.chosen, self.groups = chosen, groups


def _aggregated_routes(heads, num_heads, n, pool_len, dtype) -> _Routes | None:
    """The head groups of the routed pairs, or None where the dense pass is cheaper (chosen by shape and load)."""
    b = heads.shape[0]
    chosen = _selection(heads, num_heads, check=True)  # (B, N, h)
    if b * num_heads * n * pool_len < SPARSE_MIN_POOLED_LOGITS:
        return None
    caps = chosen.sum(dim=1).amax(dim=0).tolist()  # per head: the most tokens one batch element sends to it
    groups = _head_groups(caps)
    if sum(cap * len(group) for group, cap in groups) > SPARSE_MAX_ROW_FRACTION * num_heads * n:
        return None
    order = torch.argsort((~chosen).to(torch.uint8), dim=1, stable=True)  # (B, N, h): selected tokens first
    routed = []
    for whole_group, cap in groups:
        step = max(1, CPU_CHUNK_LOGITS // (b * cap * pool_len))  # a few heads at a time: cache-sized logits
        for start in range(0, len(whole_group), step):
            index = torch.tensor(whole_group[start : start + step], device=heads.device)
            rows = order[:, :cap, index].transpose(1, 2)  # (B, G, cap)
            routed.append((index, (index.view(1, -1, 1) * n + rows).reshape(b, -1)))
    return _Routes(chosen.transpose(1, 2).to(dtype), routed)


def head_sparse_aggregated_attention_cpu(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    local_bias: torch.Tensor,
    pool_bias: torch.Tensor,
    local_weights: torch.Tensor | None,
    height: int,
    width: int,
    window_size: int,
    heads: torch.Tensor,
    gates: torch.Tensor,
) -> torch.Tensor:
    """The non-Triton path of :func:`head_sparse_aggregated_attention` (same arguments and result, gated (B, N, h,
    dv)). The local window runs dense (shifted views, L entries per pair, cheap); the pooled keys (P per pair, the
    bulk at dense-task sizes) only for the routed (token, head) pairs, gathered per head group, where that is cheaper
    than every head then the gates: ``SPARSE_MIN_POOLED_LOGITS`` and ``SPARSE_MAX_ROW_FRACTION`` decide by shape
    and load; otherwise :func:`aggregated_attention_cpu` on every head, then the gates (the official form)."""
    args = (q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width, window_size)
    _check_inputs(*args)
    routes = _aggregated_routes(heads, q.shape[1], q.shape[2], k_pool.shape[2], q.dtype)
    if routes is None:
        out = AggregatedAttentionShiftedFunction.apply(*args)
    else:
        out = AggregatedAttentionShiftedFunction.apply(*args, routes)
    return torch.einsum("bne,bned->bned", dense_gates(heads, gates, q.shape[1]), out.transpose(1, 2))


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------
#
# One program per (block of BLOCK_M query pixels, batch x head). The window is a static loop over its L entries:
# entry j gathers the BLOCK_M neighbour rows of k (and later v) at offset (dy, dx) straight from the (B, h, N, d)
# tensors, so the unfolded (N, L, d) windows never exist; the L local logits live in a (BLOCK_M, BLOCK_L) register
# tile. The pooled keys stream in blocks with an online softmax that starts from the local logits' maximum.
# Everything is computed in fp32 (loads are upcast), dots with fp32 operands (3xTF32 for fp32 inputs, one TF32 pass
# for half inputs), so the interpreter's bf16 tl.dot pitfall cannot arise. The forward keeps the fp32 log-sum-exp.
#
# Backward, with p = exp(logit - lse), dp = dO . v, delta_i = sum over all L + P entries of p dp:
#   ds = p (dp - delta);  dq_i = sum_j ds_ij k_nb(i,j) + sum_p ds_ip kp_p;  d local_weights_ij = dO_i . v_nb(i,j)
#   d local_bias[j] = sum_i ds_ij;  d pool_bias[i, p] = sum_batch ds_ip
#   dk_m = sum over queries i with nb(i, j) = m of ds_ij q_i (+ pooled: sum_i ds_ip q_i)
#   dv_m = sum over those queries of (p_ij + local_weights_ij) dO_i (+ pooled: sum_i p_ip dO_i)
# Three kernels: query-major (delta, dq, d local_weights, the two bias gradients by fp32 atomics: they sum over the
# batch and, for local_bias, over pixels); local key-major (each key pixel visits the L queries that see it as
# entry j: the query at key - offset_j, so no atomics); pooled key-major (flash-attention style over all queries).


@_jit
def _offset4(base, b, h, s0, s1):
    return base + b.to(tl.int64) * s0 + h.to(tl.int64) * s1


@_jit
def _rows(base, rows, cols, s2, s3, mask_rows, mask_cols):
    """(rows x cols) fp32 tile of a (tokens, dim) slice; zero outside the masks."""
    ptrs = base + rows.to(tl.int64)[:, None] * s2 + cols[None, :] * s3
    return tl.load(ptrs, mask=mask_rows[:, None] & mask_cols[None, :], other=0.0).to(tl.float32)


@_jit
def _neighbour(y, x, row_ok, height, width, J: tl.constexpr, WINDOW: tl.constexpr):
    """Window entry J of pixels (y, x): its token index and whether it lies inside the map."""
    ny = y + (J // WINDOW - WINDOW // 2)
    nx = x + (J % WINDOW - WINDOW // 2)
    ok = row_ok & (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    return ny * width + nx, ok


@_jit
def _local_logits(q, KL, skl2, skl3, LB, slb1, y, x, row_ok, height, width, cols_d, d_ok, cols_l,
                  WINDOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr):  # fmt: skip
    s_local = tl.full([BLOCK_M, BLOCK_L], float("-inf"), dtype=tl.float32)
    for j in tl.static_range(WINDOW * WINDOW):
        nb, ok = _neighbour(y, x, row_ok, height, width, j, WINDOW)
        k_j = _rows(KL, nb, cols_d, skl2, skl3, ok, d_ok)
        s_j = tl.sum(q * k_j, 1) + tl.load(LB + j * slb1).to(tl.float32)
        s_j = tl.where(ok, s_j, float("-inf"))
        s_local = tl.where(cols_l[None, :] == j, s_j[:, None], s_local)
    return s_local


@_jit
def _query_rows(SLOTS, COUNTS, bh, pid_m, n_tokens, BLOCK_M: tl.constexpr, SPARSE: tl.constexpr):
    """The block's query tokens: consecutive pixels, or (head-sparse) the block's slots of the tokens that selected
    this head; plus whether the block holds any (an empty block then runs no pooled-key steps)."""
    if SPARSE:
        count = tl.load(COUNTS + bh)
        slot = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = slot < count
        rows = tl.load(SLOTS + bh.to(tl.int64) * n_tokens + slot, mask=row_ok, other=0)
        active = pid_m * BLOCK_M < count
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_tokens
        active = pid_m * BLOCK_M < n_tokens
    return rows, row_ok, active


@_jit
def _agg_fwd_kernel(
    Q, KL, VL, KP, VP, LB, PB, LW, OUT, LSE, SLOTS, COUNTS,
    sq0, sq1, sq2, sq3, skl0, skl1, skl2, skl3, svl0, svl1, svl2, svl3,
    skp0, skp1, skp2, skp3, svp0, svp1, svp2, svp3,
    slb0, slb1, spb0, spb1, spb2, slw0, slw1, slw2, slw3, so0, so1, so2, so3,
    heads, height, width, pool_len, head_dim, value_dim,
    WINDOW: tl.constexpr, HAS_LW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
    SPARSE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    n_tokens = height * width
    rows, row_ok, active = _query_rows(SLOTS, COUNTS, bh, pid_m, n_tokens, BLOCK_M, SPARSE)
    pool_here = tl.where(active, pool_len, 0)
    y = rows // width
    x = rows % width
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    cols_l = tl.arange(0, BLOCK_L)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    Q = _offset4(Q, b, h, sq0, sq1)
    KL = _offset4(KL, b, h, skl0, skl1)
    VL = _offset4(VL, b, h, svl0, svl1)
    KP = _offset4(KP, b, h, skp0, skp1)
    VP = _offset4(VP, b, h, svp0, svp1)
    LB = LB + h.to(tl.int64) * slb0
    PB = PB + h.to(tl.int64) * spb0

    q = _rows(Q, rows, cols_d, sq2, sq3, row_ok, d_ok)
    s_local = _local_logits(q, KL, skl2, skl3, LB, slb1, y, x, row_ok, height, width, cols_d, d_ok, cols_l,
                            WINDOW, BLOCK_M, BLOCK_L)  # fmt: skip
    m = tl.max(s_local, 1)
    m = tl.where(row_ok, m, 0.0)  # padded rows: all -inf; keep them finite
    l_sum = tl.sum(tl.exp(s_local - m[:, None]), 1)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for p0 in range(0, pool_here, BLOCK_P):
        pcols = p0 + tl.arange(0, BLOCK_P)
        p_ok = pcols < pool_len
        kp = _rows(KP, pcols, cols_d, skp2, skp3, p_ok, d_ok)
        s = matmul(q, tl.trans(kp), FP32_DOT)
        s += _rows(PB, rows, pcols, spb1, spb2, row_ok, p_ok)
        s = tl.where(p_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        pp = tl.exp(s - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(pp, 1)
        vp = _rows(VP, pcols, cols_dv, svp2, svp3, p_ok, dv_ok)
        acc = acc * alpha[:, None] + matmul(pp, vp, FP32_DOT)
        m = m_new
    p_local = tl.exp(s_local - m[:, None])
    extra = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for j in tl.static_range(WINDOW * WINDOW):
        nb, ok = _neighbour(y, x, row_ok, height, width, j, WINDOW)
        v_j = _rows(VL, nb, cols_dv, svl2, svl3, ok, dv_ok)
        p_j = tl.sum(tl.where(cols_l[None, :] == j, p_local, 0.0), 1)
        acc += p_j[:, None] * v_j
        if HAS_LW:
            lw_ptr = _offset4(LW, b, h, slw0, slw1) + rows.to(tl.int64) * slw2 + j * slw3
            e_j = tl.load(lw_ptr, mask=ok, other=0.0).to(tl.float32)
            extra += e_j[:, None] * v_j
    l_sum = tl.where(row_ok, l_sum, 1.0)  # rows of an empty head-sparse block saw no key
    out = acc / l_sum[:, None] + extra
    o_ptrs = _offset4(OUT, b, h, so0, so1) + rows.to(tl.int64)[:, None] * so2 + cols_dv[None, :] * so3
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    tl.store(LSE + bh.to(tl.int64) * n_tokens + rows, m + tl.log(l_sum), mask=row_ok)


@_jit
def _agg_bwd_query_kernel(
    Q, KL, VL, KP, VP, LB, PB, DO, LSE, DELTA, DQ, DLW, DLB, DPB, SLOTS, COUNTS,
    sq0, sq1, sq2, sq3, skl0, skl1, skl2, skl3, svl0, svl1, svl2, svl3,
    skp0, skp1, skp2, skp3, svp0, svp1, svp2, svp3,
    slb0, slb1, spb0, spb1, spb2, sdo0, sdo1, sdo2, sdo3, sdq0, sdq1, sdq2, sdq3,
    sdlw0, sdlw1, sdlw2, sdlw3,
    heads, height, width, pool_len, head_dim, value_dim,
    WINDOW: tl.constexpr, HAS_LW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
    SPARSE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    n_tokens = height * width
    rows, row_ok, active = _query_rows(SLOTS, COUNTS, bh, pid_m, n_tokens, BLOCK_M, SPARSE)
    pool_here = tl.where(active, pool_len, 0)
    y = rows // width
    x = rows % width
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    cols_l = tl.arange(0, BLOCK_L)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    Q = _offset4(Q, b, h, sq0, sq1)
    KL = _offset4(KL, b, h, skl0, skl1)
    VL = _offset4(VL, b, h, svl0, svl1)
    KP = _offset4(KP, b, h, skp0, skp1)
    VP = _offset4(VP, b, h, svp0, svp1)
    DO = _offset4(DO, b, h, sdo0, sdo1)
    LB = LB + h.to(tl.int64) * slb0
    PB = PB + h.to(tl.int64) * spb0
    DPB = DPB + h.to(tl.int64) * n_tokens * pool_len

    q = _rows(Q, rows, cols_d, sq2, sq3, row_ok, d_ok)
    do = _rows(DO, rows, cols_dv, sdo2, sdo3, row_ok, dv_ok)
    lse = tl.load(LSE + bh.to(tl.int64) * n_tokens + rows, mask=row_ok, other=0.0)
    s_local = _local_logits(q, KL, skl2, skl3, LB, slb1, y, x, row_ok, height, width, cols_d, d_ok, cols_l,
                            WINDOW, BLOCK_M, BLOCK_L)  # fmt: skip
    p_local = tl.exp(s_local - lse[:, None])
    dp_local = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)
    for j in tl.static_range(WINDOW * WINDOW):
        nb, ok = _neighbour(y, x, row_ok, height, width, j, WINDOW)
        v_j = _rows(VL, nb, cols_dv, svl2, svl3, ok, dv_ok)
        dp_j = tl.sum(do * v_j, 1)  # 0 outside the map (zero values), as the official padding gives
        dp_local = tl.where(cols_l[None, :] == j, dp_j[:, None], dp_local)
        if HAS_LW:
            dlw_ptr = _offset4(DLW, b, h, sdlw0, sdlw1) + rows.to(tl.int64) * sdlw2 + j * sdlw3
            tl.store(dlw_ptr, dp_j.to(DLW.dtype.element_ty), mask=row_ok)
    delta = tl.sum(p_local * dp_local, 1)
    for p0 in range(0, pool_here, BLOCK_P):
        pcols = p0 + tl.arange(0, BLOCK_P)
        p_ok = pcols < pool_len
        kp = _rows(KP, pcols, cols_d, skp2, skp3, p_ok, d_ok)
        vp = _rows(VP, pcols, cols_dv, svp2, svp3, p_ok, dv_ok)
        s = matmul(q, tl.trans(kp), FP32_DOT) + _rows(PB, rows, pcols, spb1, spb2, row_ok, p_ok)
        pp = tl.where(p_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        delta += tl.sum(pp * matmul(do, tl.trans(vp), FP32_DOT), 1)
    tl.store(DELTA + bh.to(tl.int64) * n_tokens + rows, delta, mask=row_ok)

    ds_local = p_local * (dp_local - delta[:, None])
    ds_local = tl.where(row_ok[:, None], ds_local, 0.0)
    tl.atomic_add(DLB + h * BLOCK_L + cols_l, tl.sum(ds_local, 0), mask=cols_l < WINDOW * WINDOW)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for j in tl.static_range(WINDOW * WINDOW):
        nb, ok = _neighbour(y, x, row_ok, height, width, j, WINDOW)
        k_j = _rows(KL, nb, cols_d, skl2, skl3, ok, d_ok)
        ds_j = tl.sum(tl.where(cols_l[None, :] == j, ds_local, 0.0), 1)
        dq += ds_j[:, None] * k_j
    for p0 in range(0, pool_here, BLOCK_P):
        pcols = p0 + tl.arange(0, BLOCK_P)
        p_ok = pcols < pool_len
        kp = _rows(KP, pcols, cols_d, skp2, skp3, p_ok, d_ok)
        vp = _rows(VP, pcols, cols_dv, svp2, svp3, p_ok, dv_ok)
        s = matmul(q, tl.trans(kp), FP32_DOT) + _rows(PB, rows, pcols, spb1, spb2, row_ok, p_ok)
        pp = tl.where(p_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        ds = pp * (matmul(do, tl.trans(vp), FP32_DOT) - delta[:, None])
        ds = tl.where(row_ok[:, None] & p_ok[None, :], ds, 0.0)
        dq += matmul(ds, kp, FP32_DOT)
        dpb_ptrs = DPB + rows.to(tl.int64)[:, None] * pool_len + pcols[None, :]
        tl.atomic_add(dpb_ptrs, ds, mask=row_ok[:, None] & p_ok[None, :])
    dq_ptrs = _offset4(DQ, b, h, sdq0, sdq1) + rows.to(tl.int64)[:, None] * sdq2 + cols_d[None, :] * sdq3
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@_jit
def _agg_bwd_local_kv_kernel(
    Q, KL, VL, LB, LW, DO, LSE, DELTA, DKL, DVL, CHOSEN,
    sq0, sq1, sq2, sq3, skl0, skl1, skl2, skl3, svl0, svl1, svl2, svl3,
    slb0, slb1, slw0, slw1, slw2, slw3, sdo0, sdo1, sdo2, sdo3,
    sdk0, sdk1, sdk2, sdk3, sdv0, sdv1, sdv2, sdv3,
    heads, height, width, head_dim, value_dim,
    WINDOW: tl.constexpr, HAS_LW: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, SPARSE: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    n_tokens = height * width
    keys = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    key_ok = keys < n_tokens
    ky = keys // width
    kx = keys % width
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    Q = _offset4(Q, b, h, sq0, sq1)
    DO = _offset4(DO, b, h, sdo0, sdo1)
    LB = LB + h.to(tl.int64) * slb0
    k = _rows(_offset4(KL, b, h, skl0, skl1), keys, cols_d, skl2, skl3, key_ok, d_ok)
    v = _rows(_offset4(VL, b, h, svl0, svl1), keys, cols_dv, svl2, svl3, key_ok, dv_ok)
    dk = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for j in tl.static_range(WINDOW * WINDOW):
        # the query that sees this key as its window entry j sits at key - offset_j
        qy = ky - (j // WINDOW - WINDOW // 2)
        qx = kx - (j % WINDOW - WINDOW // 2)
        ok = key_ok & (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        qi = qy * width + qx
        if SPARSE:  # only queries that selected this head took part
            ok = ok & (tl.load(CHOSEN + bh.to(tl.int64) * n_tokens + qi, mask=ok, other=0) != 0)
        q_i = _rows(Q, qi, cols_d, sq2, sq3, ok, d_ok)
        do_i = _rows(DO, qi, cols_dv, sdo2, sdo3, ok, dv_ok)
        lse = tl.load(LSE + bh.to(tl.int64) * n_tokens + qi, mask=ok, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * n_tokens + qi, mask=ok, other=0.0)
        s = tl.sum(q_i * k, 1) + tl.load(LB + j * slb1).to(tl.float32)
        p = tl.where(ok, tl.exp(s - lse), 0.0)
        ds = p * (tl.sum(do_i * v, 1) - delta)
        weight = p
        if HAS_LW:
            lw_ptr = _offset4(LW, b, h, slw0, slw1) + qi.to(tl.int64) * slw2 + j * slw3
            weight += tl.load(lw_ptr, mask=ok, other=0.0).to(tl.float32)
        dk += ds[:, None] * q_i
        dv += weight[:, None] * do_i
    dk_ptrs = _offset4(DKL, b, h, sdk0, sdk1) + keys.to(tl.int64)[:, None] * sdk2 + cols_d[None, :] * sdk3
    tl.store(dk_ptrs, dk.to(DKL.dtype.element_ty), mask=key_ok[:, None] & d_ok[None, :])
    dv_ptrs = _offset4(DVL, b, h, sdv0, sdv1) + keys.to(tl.int64)[:, None] * sdv2 + cols_dv[None, :] * sdv3
    tl.store(dv_ptrs, dv.to(DVL.dtype.element_ty), mask=key_ok[:, None] & dv_ok[None, :])


@_jit
def _agg_bwd_pool_kv_kernel(
    Q, KP, VP, PB, DO, LSE, DELTA, DKP, DVP, SLOTS, COUNTS,
    sq0, sq1, sq2, sq3, skp0, skp1, skp2, skp3, svp0, svp1, svp2, svp3,
    spb0, spb1, spb2, sdo0, sdo1, sdo2, sdo3,
    sdk0, sdk1, sdk2, sdk3, sdv0, sdv1, sdv2, sdv3,
    heads, n_tokens, pool_len, head_dim, value_dim,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    FP32_DOT: tl.constexpr, SPARSE: tl.constexpr,
):  # fmt: skip
    pid_p = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    pcols = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = pcols < pool_len
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    Q = _offset4(Q, b, h, sq0, sq1)
    DO = _offset4(DO, b, h, sdo0, sdo1)
    PB = PB + h.to(tl.int64) * spb0
    kp = _rows(_offset4(KP, b, h, skp0, skp1), pcols, cols_d, skp2, skp3, p_ok, d_ok)
    vp = _rows(_offset4(VP, b, h, svp0, svp1), pcols, cols_dv, svp2, svp3, p_ok, dv_ok)
    dk = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_P, BLOCK_DV], dtype=tl.float32)
    n_rows = tl.load(COUNTS + bh) if SPARSE else n_tokens  # head-sparse: only the tokens that selected this head
    for m0 in range(0, n_rows, BLOCK_M):
        if SPARSE:
            slot = m0 + tl.arange(0, BLOCK_M)
            row_ok = slot < n_rows
            rows = tl.load(SLOTS + bh.to(tl.int64) * n_tokens + slot, mask=row_ok, other=0)
        else:
            rows = m0 + tl.arange(0, BLOCK_M)
            row_ok = rows < n_tokens
        q = _rows(Q, rows, cols_d, sq2, sq3, row_ok, d_ok)
        do = _rows(DO, rows, cols_dv, sdo2, sdo3, row_ok, dv_ok)
        lse = tl.load(LSE + bh.to(tl.int64) * n_tokens + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * n_tokens + rows, mask=row_ok, other=0.0)
        s = matmul(q, tl.trans(kp), FP32_DOT) + _rows(PB, rows, pcols, spb1, spb2, row_ok, p_ok)
        pp = tl.where(row_ok[:, None] & p_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        ds = pp * (matmul(do, tl.trans(vp), FP32_DOT) - delta[:, None])
        dv += matmul(tl.trans(pp), do, FP32_DOT)
        dk += matmul(tl.trans(ds), q, FP32_DOT)
    dk_ptrs = _offset4(DKP, b, h, sdk0, sdk1) + pcols.to(tl.int64)[:, None] * sdk2 + cols_d[None, :] * sdk3
    tl.store(dk_ptrs, dk.to(DKP.dtype.element_ty), mask=p_ok[:, None] & d_ok[None, :])
    dv_ptrs = _offset4(DVP, b, h, sdv0, sdv1) + pcols.to(tl.int64)[:, None] * sdv2 + cols_dv[None, :] * sdv3
    tl.store(dv_ptrs, dv.to(DVP.dtype.element_ty), mask=p_ok[:, None] & dv_ok[None, :])


# ----------------------------------------------------------------------------------------------------------------
# autograd.Function
# ----------------------------------------------------------------------------------------------------------------


def _s4(t: torch.Tensor | None) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if t is None else (t.stride(0), t.stride(1), t.stride(2), t.stride(3))


# every aggregated-attention kernel: 8 warps, no software pipelining (register-bound, not latency-bound)
_LAUNCH = dict(num_warps=8, num_stages=1)


def _blocks(head_dim: int, value_dim: int, window_size: int, dtype: torch.dtype | None = None) -> dict:
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_dv = max(16, triton.next_power_of_2(value_dim))
    # the CPU interpreter pays per program and loop step, not per element: fewer, larger tiles. On a GPU, 32 query
    # rows (16 in fp32, whose 3xTF32 dots split every operand in two): each row holds its window logits, pooled
    # logits and several (rows x d) fp32 tiles, and 64-row tiles spilled (up to 10 KB in the dK/dV backward;
    # tools/kernel_check.py, docs/kernels/compile_report.md)
    block_m = 64 if interpreting() else (16 if dtype == torch.float32 else 32)
    return dict(
        BLOCK_M=block_m, BLOCK_P=32, BLOCK_L=max(16, triton.next_power_of_2(window_size * window_size)),
        BLOCK_D=block_d, BLOCK_DV=block_dv,
    )  # fmt: skip


def _query_dots(kind: str, dtype: torch.dtype, sparse: bool, device: torch.device, block_m: int) -> tuple[object, int]:
    """(FP32_DOT, BLOCK_M) of the query-side kernels (``"fwd"``, ``"bwd_query"``) on the launch's target: where the
    tensor-core dots' register operands spilled (tools/kernel_check.py: 8-16 B; the fp32 forward on sm_80, the fp32
    query backward on sm_100), fp32 FMA dots (``"ieee"``: exact fp32, no operand copies); the head-sparse bf16
    forward on 16-row tiles (32 spilled on sm_90 / sm_100). ``block_m``: :func:`_blocks`' choice, kept otherwise."""
    target = target_capability(device)
    if dtype == torch.float32:
        spills = (kind == "fwd" and target < 90) or (kind == "bwd_query" and target >= 100)
        return ("ieee" if spills else True), block_m
    if kind == "fwd" and sparse and target >= 90 and not interpreting():
        return False, 16
    return False, block_m


def _triton_ready() -> bool:
    return triton is not None


def _triton_supports(q: torch.Tensor, v: torch.Tensor) -> bool:
    dims_ok = q.shape[3] <= TRITON_MAX_HEAD_DIM and v.shape[3] <= TRITON_MAX_HEAD_DIM
    return dims_ok and q.dtype in (torch.float16, torch.bfloat16, torch.float32)


class AggregatedAttentionFunction(torch.autograd.Function):
    """Fused aggregated attention (Triton): saves the inputs and the fp32 log-sum-exp; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                window_size, slots=None, counts=None):  # fmt: skip
        b, h, n, d = q.shape
        dv, pool_len = v_local.shape[3], k_pool.shape[2]
        blocks = _blocks(d, dv, window_size, q.dtype)
        sparse = slots is not None  # head-sparse: only the (token, head) pairs listed in slots/counts; zero elsewhere
        fp32_dot, blocks["BLOCK_M"] = _query_dots("fwd", q.dtype, sparse, q.device, blocks["BLOCK_M"])
        new = torch.zeros if sparse else torch.empty
        out = new(b, n, h, dv, dtype=q.dtype, device=q.device).transpose(1, 2)
        lse = torch.zeros(b * h, n, dtype=torch.float32, device=q.device)
        has_lw = local_weights is not None
        lw = local_weights if has_lw else q
        _agg_fwd_kernel[(triton.cdiv(n, blocks["BLOCK_M"]), b * h)](
            q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, lw, out, lse,
            slots if sparse else lse, counts if sparse else lse,
            *_s4(q), *_s4(k_local), *_s4(v_local), *_s4(k_pool), *_s4(v_pool),
            local_bias.stride(0), local_bias.stride(1), *pool_bias.stride(), *_s4(lw), *_s4(out),
            h, height, width, pool_len, d, dv,
            WINDOW=window_size, HAS_LW=has_lw, FP32_DOT=fp32_dot, SPARSE=sparse, **_LAUNCH, **blocks,
        )  # fmt: skip
        ctx.save_for_backward(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, lse, slots,
                              counts)  # fmt: skip
        ctx.geometry = (height, width, window_size)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, lse, slots, counts = (
            ctx.saved_tensors
        )
        height, width, window_size = ctx.geometry
        sparse = slots is not None
        new = torch.zeros if sparse else torch.empty  # head-sparse: unselected rows are never written
        b, h, n, d = q.shape
        dv, pool_len = v_local.shape[3], k_pool.shape[2]
        window = window_size * window_size
        blocks = _blocks(d, dv, window_size, q.dtype)
        fp32_dot = q.dtype == torch.float32
        has_lw = local_weights is not None
        lw = local_weights if has_lw else q
        dev = q.device
        delta = new(b * h, n, dtype=torch.float32, device=dev)
        dq = new(q.shape, dtype=q.dtype, device=dev)
        dlw = new(b, h, n, window, dtype=q.dtype, device=dev) if has_lw else q
        slot_args = (slots, counts) if sparse else (lse, lse)
        if sparse:  # (B*h, N) int8: which queries selected each head, for the key-major local sweep
            listed = (torch.arange(n, device=dev) < counts.reshape(b * h, 1)).to(torch.int8)
            chosen = torch.zeros(b * h, n, dtype=torch.int8, device=dev).scatter(
                1, slots.reshape(b * h, n).long(), listed
            )
        else:
            chosen = lse
        dlb = torch.zeros(h, blocks["BLOCK_L"], dtype=torch.float32, device=dev)
        dpb = torch.zeros(h, n, pool_len, dtype=torch.float32, device=dev)
        query_dot, query_m = _query_dots("bwd_query", q.dtype, sparse, dev, blocks["BLOCK_M"])
        _agg_bwd_query_kernel[(triton.cdiv(n, query_m), b * h)](
            q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, grad_out, lse, delta, dq, dlw, dlb, dpb,
            *slot_args, *_s4(q), *_s4(k_local), *_s4(v_local), *_s4(k_pool), *_s4(v_pool),
            local_bias.stride(0), local_bias.stride(1), *pool_bias.stride(), *_s4(grad_out), *_s4(dq), *_s4(dlw),
            h, height, width, pool_len, d, dv,
            WINDOW=window_size, HAS_LW=has_lw, FP32_DOT=query_dot, SPARSE=sparse, **_LAUNCH,
            **{**blocks, "BLOCK_M": query_m},
        )  # fmt: skip
        dkl = torch.empty(k_local.shape, dtype=q.dtype, device=dev)
        dvl = torch.empty(v_local.shape, dtype=q.dtype, device=dev)
        # dK/dV of the windows: 16 query rows on a GPU (32 spilled in fp32 and fp16 on sm_90)
        local_m = blocks["BLOCK_M"] if interpreting() else 16
        _agg_bwd_local_kv_kernel[(triton.cdiv(n, local_m), b * h)](
            q, k_local, v_local, local_bias, lw, grad_out, lse, delta, dkl, dvl, chosen,
            *_s4(q), *_s4(k_local), *_s4(v_local), local_bias.stride(0), local_bias.stride(1), *_s4(lw),
            *_s4(grad_out), *_s4(dkl), *_s4(dvl),
            h, height, width, d, dv,
            WINDOW=window_size, HAS_LW=has_lw, BLOCK_M=local_m, BLOCK_D=blocks["BLOCK_D"],
            BLOCK_DV=blocks["BLOCK_DV"], SPARSE=sparse, **_LAUNCH,
        )  # fmt: skip
        dkp = torch.empty(k_pool.shape, dtype=q.dtype, device=dev)
        dvp = torch.empty(v_pool.shape, dtype=q.dtype, device=dev)
        # dK/dV of the pooled keys: fp32 on 16 pooled keys and 4 warps on a GPU (32 / 8 warps spilled on sm_90)
        pool_p, pool_launch = blocks["BLOCK_P"], _LAUNCH
        if fp32_dot and not interpreting():
            pool_p, pool_launch = 16, dict(num_warps=4, num_stages=1)
        _agg_bwd_pool_kv_kernel[(triton.cdiv(pool_len, pool_p), b * h)](
            q, k_pool, v_pool, pool_bias, grad_out, lse, delta, dkp, dvp, *slot_args,
            *_s4(q), *_s4(k_pool), *_s4(v_pool), *pool_bias.stride(), *_s4(grad_out), *_s4(dkp), *_s4(dvp),
            h, n, pool_len, d, dv,
            BLOCK_M=blocks["BLOCK_M"], BLOCK_P=pool_p, BLOCK_D=blocks["BLOCK_D"],
            BLOCK_DV=blocks["BLOCK_DV"], FP32_DOT=fp32_dot, SPARSE=sparse, **pool_launch,
        )  # fmt: skip
        dlb = dlb[:, :window].to(local_bias.dtype)
        grads = (dq, dkl, dvl, dkp, dvp, dlb, dpb.to(pool_bias.dtype), dlw if has_lw else None, None, None, None)
        return grads + ((None, None) if sparse else ())


# ----------------------------------------------------------------------------------------------------------------
# The ops: attnzoo::aggregated_forward / _backward and attnzoo::head_sparse_aggregated_forward / _backward
# (attnzoo.kernels.backend.kernel_op), the one entry point on every device
# ----------------------------------------------------------------------------------------------------------------

_AGG_ARGUMENTS = ("Tensor q, Tensor k_local, Tensor v_local, Tensor k_pool, Tensor v_pool, Tensor local_bias, "
                  "Tensor pool_bias, Tensor? local_weights, int height, int width, int window_size")  # fmt: skip


def _uses_triton(q, k_local, v_local, k_pool, v_pool, *rest) -> bool:
    """The path the ops' kernels take (real or fake tensors): Triton for CUDA tensors (or ZOO_KERNELS=triton) in
    fp16/bf16/fp32 at the head dims it takes; the CPU path (float64 included) otherwise."""
    return (choose_backend(q, k_local, v_local, k_pool, v_pool) == "triton" and _triton_ready()
            and q.dtype != torch.float64 and _triton_supports(q, v_local))  # fmt: skip


def _fake_out(q, k_local, v_local, *rest):
    b, h, n, _ = q.shape  # both paths write a (B, N, h, dv) buffer seen as (B, h, N, dv)
    return q.new_empty((b, n, h, v_local.shape[3])).transpose(1, 2)


def _heads_view(x: torch.Tensor) -> torch.Tensor:
    """(B, N, h, dv) -> the (B, h, N, dv) view of its contiguous buffer (the ops' output layout)."""
    return x.contiguous().transpose(1, 2)


def _triton_fake_saved(q, *rest):
    return [q.new_empty((q.shape[0] * q.shape[1], q.shape[2]), dtype=torch.float32)]  # the log-sum-exp


def _cpu_fake_saved(q, *rest):
    return [q.new_empty(q.shape[:3], dtype=_compute_dtype(q.dtype))]  # AggregatedAttentionShiftedFunction's lse


class _HeadSparseLaunch(torch.autograd.Function):
    """AggregatedAttentionFunction for the pairs ``heads`` selects: the slots are made inside the op's kernel."""

    @staticmethod
    def forward(ctx, q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                window_size, heads):  # fmt: skip
        slots, counts = _slots(heads, q.shape[1], q.shape[2])
        return AggregatedAttentionFunction.forward(ctx, q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias,
                                                   local_weights, height, width, window_size, slots, counts)  # fmt: skip

    @staticmethod
    def backward(ctx, grad_out):
        return (*AggregatedAttentionFunction.backward(ctx, grad_out)[:11], None)


def _sparse_triton_fake_saved(q, *rest):
    b, h, n, _ = q.shape
    return [*_triton_fake_saved(q), q.new_empty((b, h, n), dtype=torch.int32), q.new_empty((b, h), dtype=torch.int32)]


def _sparse_cpu(*args):
    """The non-Triton path, ungated: every selected (token, head) pair with gate 1, zero elsewhere."""
    *dense, heads = args
    ones = torch.ones(heads.shape, dtype=args[0].dtype, device=args[0].device)
    return _heads_view(head_sparse_aggregated_attention_cpu(*dense, heads, ones))


def _sparse_plain(*args):
    """For ONNX: every head (the official unfold form: functional ops, which a decomposition must be), then zero at
    the unselected pairs."""
    *dense, heads = args
    ones = torch.ones(heads.shape, dtype=args[0].dtype, device=args[0].device)
    mask = dense_gates(heads, ones, args[0].shape[1]).transpose(1, 2).unsqueeze(-1)  # (B, h, N, 1)
    return aggregated_attention_reference(*dense) * mask


_aggregated_op = kernel_op(
    "aggregated",
    f"({_AGG_ARGUMENTS})",
    uses_triton=_uses_triton,
    triton_path=None if triton is None else function_path(AggregatedAttentionFunction, _triton_fake_saved),
    other=function_path(AggregatedAttentionShiftedFunction, _cpu_fake_saved),
    fake_out=_fake_out,
    decomposition=aggregated_attention_reference,  # for ONNX: the CPU path writes in place, a decomposition may not
)

_head_sparse_aggregated_op = kernel_op(
    "head_sparse_aggregated",
    f"({_AGG_ARGUMENTS}, Tensor heads)",
    uses_triton=_uses_triton,
    triton_path=None if triton is None else function_path(_HeadSparseLaunch, _sparse_triton_fake_saved),
    other=recompute_path(_sparse_cpu),  # the CPU path's head routing depends on the data: recomputed, not kept
    fake_out=_fake_out,
    decomposition=_sparse_plain,
)


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------


def aggregated_attention(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    local_bias: torch.Tensor,
    pool_bias: torch.Tensor,
    local_weights: torch.Tensor | None,
    height: int,
    width: int,
    window_size: int,
) -> torch.Tensor:
    """TransNeXt's aggregated attention core (see the module docstring), dispatched: Triton on CUDA (or when
    ``ZOO_KERNELS=triton``), :func:`aggregated_attention_cpu` otherwise (shifted views, never the unfolded windows;
    the unfold reference is the test spec only).

    q (B, h, N, d): ``(normalize(q) + query_embedding) * softplus(temperature) * length_scale(...)``;
    k_local (B, h, N, d): l2-normalised keys of every pixel; v_local (B, h, N, dv);
    k_pool (B, h, P, d): l2-normalised pooled keys; v_pool (B, h, P, dv);
    local_bias (h, window_size**2): ``relative_pos_bias_local``;
    pool_bias (h, N, P): the CPB MLP output gathered by ``relative_pos_index`` (``.view(-1, N, P)``);
    local_weights (B, h, N, window_size**2) or None: ``q_norm @ learnable_tokens + learnable_bias``;
    N = height * width, tokens row-major. Returns ``x_local + x_pool`` (B, h, N, dv) in q's dtype (from the
    kernel, a (B, N, h, dv) buffer seen as (B, h, N, dv), so ``.transpose(1, 2).reshape(B, N, h * dv)`` is free).
    No attention dropout. float64 always takes :func:`aggregated_attention_cpu`; so do head dims above
    ``TRITON_MAX_HEAD_DIM`` unless ``ZOO_KERNELS=triton`` forces the kernel, which then refuses them.
    """
    q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights = cast_for_autocast(
        q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights
    )
    _check_inputs(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width,
                  window_size)  # fmt: skip
    args = (q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width, window_size)
    _refuse_forced(q, v_local)
    # one op on every device: its kernel runs AggregatedAttentionFunction's launchers where _uses_triton says so
    # (CUDA), AggregatedAttentionShiftedFunction (aggregated_attention_cpu's path) elsewhere
    out, _ = _aggregated_op(*args[:8], int(height), int(width), int(window_size))
    return out


def _refuse_forced(q: torch.Tensor, v_local: torch.Tensor) -> None:
    if (forced_backend() == "triton" and _triton_ready() and q.dtype != torch.float64
            and not _triton_supports(q, v_local)):  # fmt: skip
        raise ValueError(
            f"the Triton aggregated-attention kernel takes float16/bfloat16/float32 and head dims up to "
            f"{TRITON_MAX_HEAD_DIM}; got {q.dtype}, {q.shape[3]} (qk), {v_local.shape[3]} (v): use "
            f"ZOO_KERNELS=reference"
        )


def head_sparse_aggregated_attention(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    local_bias: torch.Tensor,
    pool_bias: torch.Tensor,
    local_weights: torch.Tensor | None,
    height: int,
    width: int,
    window_size: int,
    heads: torch.Tensor,
    gates: torch.Tensor,
) -> torch.Tensor:
    """MoH on aggregated attention (MoH-TransNeXt's stage 3): :func:`aggregated_attention` for the (token, head)
    pairs a router selected, gated; the arguments as there, plus ``heads`` (B, N, K) int64/int32 (the K distinct
    heads each token uses, shared heads included) and ``gates`` (B, N, K) (the official ``masked_gates`` at those
    heads), as :func:`attnzoo.kernels.moh.head_sparse_attention`.

    Returns (B, N, h, dv) in q's dtype, zero at unselected pairs: ``.reshape(B, N, h * dv)`` is the projection's
    input, equal to the official ``einsum("bne,bned->bned", masked_gates, x)``. The Triton path computes only the
    selected pairs (query-side work and the pooled-key gradients; the local key/value gradient sweep still visits
    every key pixel, skipping unselected queries). The CPU path (:func:`head_sparse_aggregated_attention_cpu`)
    attends the pooled keys for the selected pairs only where that is cheaper, chosen by shape.
    """
    q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, gates = cast_for_autocast(
        q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, gates
    )
    args = (q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width, window_size)
    _check_inputs(*args)
    b, h, n, _ = q.shape
    if heads.dim() != 3 or heads.shape[:2] != (b, n) or not 1 <= heads.shape[2] <= h:
        raise ValueError(f"heads must be (B, N, K) = ({b}, {n}, K) with 1 <= K <= {h}; got {tuple(heads.shape)}")
    if heads.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"heads must hold integer head indices (int64 or int32); got {heads.dtype}")
    if gates.shape != heads.shape or gates.dtype != q.dtype:
        raise ValueError(f"gates must match heads' shape {tuple(heads.shape)} and q's dtype {q.dtype}; got "
                         f"{tuple(gates.shape)}, {gates.dtype}")  # fmt: skip
    # one op on every device, ungated (zero at unselected pairs): its kernel runs the Triton launchers on the
    # selected pairs where _uses_triton says so (CUDA), head_sparse_aggregated_attention_cpu elsewhere; the gates
    # multiply its output here (their gradient is autograd's)
    out, _ = _head_sparse_aggregated_op(*args[:8], int(height), int(width), int(window_size), heads)
    return torch.einsum("bne,bned->bned", dense_gates(heads, gates, h), out.transpose(1, 2))
