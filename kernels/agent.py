"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024).

A small set of agent tokens ``A`` (average-pooled queries) first attends to the keys and values
(agent -> token softmax attention with the agent position bias), then every query attends to the agents
(token -> agent softmax attention with the token position bias)::

    agent_v = softmax(scale * A @ K^T + agent_bias) @ V          # (B, h, n_agents, d)
    out     = softmax(scale * Q @ A^T + token_bias) @ agent_v    # (B, h, n_tokens, d)

The op takes the biases already built (once per call, shape ``(1, h, ...)``): they broadcast over the batch and
are never ``.repeat``-ed, unlike the official code (LeapLabTHU/Agent-Attention, ``agent_transformer/models/*.py``),
which copies them B times before every softmax.

Two paths, same maths:

- ``agent_attention_reference``: plain torch, the official order of operations (the spec).
- ``agent_attention_fused``: both attentions through ``F.scaled_dot_product_attention`` with the bias as
  ``attn_mask``.

Why SDPA and not a Triton kernel (decided by reasoning plus the CPU measurement in tools/benchmarks/agent.py):
each half of agent attention is *ordinary* softmax attention with an additive bias that broadcasts over the batch
(n_agents x n_tokens and n_tokens x n_agents). On CUDA, PyTorch's memory-efficient SDPA kernel already is the fused
tiled kernel one would write in Triton for this: online softmax with fp32 row statistics (max / log-sum-exp) for
fp16/bf16/fp32 inputs, the bias read tile by tile with stride-0 batch broadcasting, no (B, h, n_agents, n_tokens)
probability tensor kept for backward (it stores the log-sum-exp and recomputes), and a fused backward that also
returns the bias gradient. What a hand-written kernel could add beyond that is fusing the agent pooling and the bias
interpolation, which are O(h * n_agents * n_tokens) element-wise work done once per call (not per batch element)
and negligible next to the attentions; and a Triton kernel would have to beat a tuned library kernel on the same
two attentions, which nothing here could measure (no GPU in this session). What the CPU measurement
(``python tools/benchmark.py --op agent --device cpu``: Agent-PVT-T / Agent-Swin-T stages at 224, batch 4, one
thread) showed: SDPA's CPU flash kernel (fp32 accumulation as well) gives the reference's results with 1.3-4x less
forward peak memory than the reference and about the same time (0.8-1.1x, within the noise of a shared machine).
With a bias that needs a gradient (training) the CPU SDPA falls back to its unfused math path (profiled:
``_scaled_dot_product_attention_math``), so forward+backward on the CPU is no better than the reference (peak up to
1.2x the reference's). On CUDA the memory-efficient kernel takes a bias that needs a gradient
(``_efficient_attention_backward`` returns it); its GPU speed-up is for tools/gpu_check.sh to measure. The backward
of the fused path is SDPA's own fused backward, so no autograd.Function is needed: autograd composes the two SDPA
calls and the pooling.

The op: the fused path is the single entry point on every device (issue 31): ``agent_attention`` runs the two
``aten::scaled_dot_product_attention`` calls on CPU tensors too, so the graph torch.compile / torch.export capture on
the CPU holds the same SDPA nodes the GPU runs (``tests/kernels/test_compile_graphs.py``), and a CPU test of that
graph proves the GPU's. SDPA is PyTorch's own op (its CPU kernel the flash/math paths, its CUDA kernel the
memory-efficient one), so no ``attnzoo::`` op wraps it. What the CPU pays for that: with a bias that needs a gradient
(training) SDPA's CPU backward is its math path, at about the reference's time and up to 1.2x its peak memory;
inference keeps the flash kernel's saving. ``ZOO_KERNELS=reference`` still runs the reference (the spec) instead.
Nothing here knows about models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import forced_backend

__all__ = [
    "pool_agent_tokens",
    "agent_attention_reference",
    "agent_attention_fused",
    "agent_attention",
]


def pool_agent_tokens(q: torch.Tensor, hw: tuple[int, int], agent_shape: tuple[int, int]) -> torch.Tensor:
    """Agent tokens: adaptive average pooling of the queries laid out on their ``hw`` grid.

    q: (B, h, N, d) with N == H * W tokens in row-major order. Returns (B, h, ah * aw, d).
    Pooling each head's channels separately equals the official pooling of the (B, h*d, H, W) map.
    """
    b, heads, n, d = q.shape
    height, width = hw
    if n != height * width:
        raise ValueError(f"pool_agent_tokens: {n} query tokens is not the {height}x{width} grid it was told")
    agents = agent_shape[0] * agent_shape[1]
    if b == 0:  # empty in, empty out (adaptive pooling refuses an empty batch)
        return q.new_zeros(0, heads, agents, d)
    grid = q.transpose(-1, -2).reshape(b, heads * d, height, width)
    pooled = F.adaptive_avg_pool2d(grid, agent_shape)  # (B, h*d, ah, aw)
    return pooled.reshape(b, heads, d, agents).transpose(-1, -2)


def _check_shapes(q, k, v, agent_tokens, agent_bias, token_bias):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or agent_tokens.dim() != 4:
        raise ValueError("agent attention expects q, k, v, agent_tokens of shape (B, heads, tokens, head_dim)")
    b, heads, n, d = q.shape
    n_agents = agent_tokens.shape[2]
    n_keys = k.shape[2]
    if k.shape != (b, heads, n_keys, d) or v.shape[:3] != (b, heads, n_keys):
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if agent_tokens.shape != (b, heads, n_agents, d):
        raise ValueError(f"agent_tokens {tuple(agent_tokens.shape)} do not match q {tuple(q.shape)}")
    if agent_bias.shape[-3:] != (heads, n_agents, n_keys):
        raise ValueError(
            f"agent_bias {tuple(agent_bias.shape)} must end in (heads, n_agents, n_keys) = ({heads}, {n_agents}, {n_keys})"
        )
    if token_bias.shape[-3:] != (heads, n, n_agents):
        raise ValueError(
            f"token_bias {tuple(token_bias.shape)} must end in (heads, n_tokens, n_agents) = ({heads}, {n}, {n_agents})"
        )


def agent_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agent_tokens: torch.Tensor,
    agent_bias: torch.Tensor,
    token_bias: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The official computation, op for op (scale on the left operand, softmax, dropout, matmul).

    q: (B, h, N, d); k, v: (B, h, Nk, d); agent_tokens: (B, h, n, d); agent_bias: (1|B, h, n, Nk);
    token_bias: (1|B, h, N, n). Returns (B, h, N, d).
    """
    _check_shapes(q, k, v, agent_tokens, agent_bias, token_bias)
    agent_attn = torch.softmax((agent_tokens * scale) @ k.transpose(-2, -1) + agent_bias, dim=-1)
    agent_attn = F.dropout(agent_attn, dropout_p) if dropout_p > 0 else agent_attn
    agent_v = agent_attn @ v
    q_attn = torch.softmax((q * scale) @ agent_tokens.transpose(-2, -1) + token_bias, dim=-1)
    q_attn = F.dropout(q_attn, dropout_p) if dropout_p > 0 else q_attn
    return q_attn @ agent_v


def agent_attention_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agent_tokens: torch.Tensor,
    agent_bias: torch.Tensor,
    token_bias: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Same result through two fused SDPA calls (fp32 softmax statistics inside SDPA, biases broadcast)."""
    _check_shapes(q, k, v, agent_tokens, agent_bias, token_bias)
    dtype = q.dtype
    # SDPA wants the additive mask in the query dtype; the cast is of a (1, h, ., .) tensor, not a batch copy.
    agent_v = F.scaled_dot_product_attention(
        agent_tokens, k, v, attn_mask=agent_bias.to(dtype), dropout_p=dropout_p, scale=scale
    )
    return F.scaled_dot_product_attention(
        q, agent_tokens, agent_v, attn_mask=token_bias.to(dtype), dropout_p=dropout_p, scale=scale
    )


def agent_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agent_tokens: torch.Tensor,
    agent_bias: torch.Tensor,
    token_bias: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Agent attention: the fused SDPA path on every device (the graph compile captures is the GPU's on the CPU too);
    the reference only when ``ZOO_KERNELS=reference`` asks for it."""
    op = agent_attention_reference if forced_backend() == "reference" else agent_attention_fused
    return op(q, k, v, agent_tokens, agent_bias, token_bias, scale, dropout_p)
