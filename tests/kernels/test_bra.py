"""Bi-level routing attention: the Triton kernels against the plain-torch spec, forward and every gradient.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter. The
interpreter must be switched on before triton is imported, because ``@triton.jit`` picks interpreter or compiler when
the kernels module is imported. ``tests/conftest.py`` does that once for the whole session (``TRITON_INTERPRET=1``
when no GPU is visible), before any test module imports ``kernels``; so every kernel test file shares one interpreted
Triton and nothing here needs a subprocess. :func:`test_interpreter_is_on_without_gpu` fails loudly if that ordering
ever breaks.

bf16: under the interpreter ``tl.dot`` on bf16 operands returns garbage, so ``attnzoo.kernels.bra`` upcasts the dot operands
to fp32 when interpreting (constexpr ``UPCAST``); loads, stores and the fp32 softmax statistics stay bf16/fp32 as on
the GPU. The bf16 cases here therefore test the bf16 data path on the CPU and the bf16 tensor-core dots only on the GPU.

Sizes are small on purpose: the interpreter costs ~2.5 ms per program per loop step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_checks import launches

from attnzoo.kernels import bra
from attnzoo.kernels.bra import (
    BraAttentionFunction,
    bra_attention,
    bra_attention_gather,
    bra_attention_reference,
    bra_attention_triton,
    region_routing,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Floors of the low-precision tolerance: the kernel's error against a float64 reference must stay within twice the
# error of the same-dtype torch reference plus this floor (flash-attention's criterion).
LOW_PRECISION_FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make_inputs(batch, regions, tokens, heads, head_dim, topk, dtype, *, key_regions=None, key_tokens=None,
                head_dim_v=None, zero_tail=0, seed=0):
    """Random q/k/v and a random routing of distinct key regions per query region (as torch.topk gives)."""
    generator = torch.Generator().manual_seed(seed)
    key_regions = key_regions or regions
    key_tokens = key_tokens or tokens
    head_dim_v = head_dim_v or head_dim
    q = torch.randn(batch, regions, tokens, heads * head_dim, generator=generator)
    k = torch.randn(batch, key_regions, key_tokens, heads * head_dim, generator=generator)
    v = torch.randn(batch, key_regions, key_tokens, heads * head_dim_v, generator=generator)
    if zero_tail:
        # auto_pad's zero tokens: they stay in the attention unmasked (official behaviour), so only their values matter
        for tensor in (q, k, v):
            tensor[:, -1, -zero_tail:] = 0
    scores = torch.rand(batch, regions, key_regions, generator=generator)
    r_idx = scores.topk(topk, dim=-1).indices
    to = dict(device=DEVICE, dtype=dtype)
    return q.to(**to), k.to(**to), v.to(**to), r_idx.to(DEVICE)


def run_with_grads(fn, q, k, v, r_idx, heads, scale, grad_out):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, r_idx, heads, scale)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    return (out, *grads)


NAMES = ("out", "dq", "dk", "dv")

# (batch, regions, tokens, heads, head_dim, topk, extra): odd and non-power-of-two region sizes (3x5, 7x7, 13x19),
# topk 1/4/16 (+64), heads 1/2/8 (+16), head dims 16/32/64 (+24, 128), different key/query sizes, zero padding.
# Each case costs (query programs * 2 + key programs) * loop steps in the interpreter, ~10-30 ms each on a shared CPU:
# heads 8 and topk 16 appear where the region count stays small (topk 16 routes 4 query regions into 16 key regions).
FP32_CASES = [
    (1, 4, 5, 1, 16, 1, {}),
    (1, 9, 7, 2, 32, 4, {}),
    (1, 4, 3, 1, 16, 16, {"key_regions": 16}),
    (1, 4, 49, 2, 64, 1, {}),
    (1, 2, 15, 8, 32, 2, {}),
    (1, 4, 4, 2, 64, 16, {"key_regions": 16}),
    (1, 2, 247, 1, 16, 1, {}),
    (1, 5, 6, 2, 24, 2, {"key_regions": 7, "key_tokens": 9}),
    (1, 2, 16, 1, 128, 2, {"head_dim_v": 32}),
    (1, 4, 9, 2, 16, 4, {"zero_tail": 4}),
    (1, 2, 3, 16, 16, 2, {}),
    (1, 1, 2, 1, 16, 64, {"key_regions": 64}),
]
LOW_PRECISION_CASES = [
    (1, 9, 7, 2, 32, 4, {}),
    (1, 4, 4, 1, 16, 16, {"key_regions": 16}),
    (1, 2, 15, 8, 16, 2, {}),
    (1, 4, 49, 2, 64, 1, {}),
]


def _case_id(case):
    batch, regions, tokens, heads, head_dim, topk, extra = case
    suffix = "".join(f"-{key}{value}" for key, value in extra.items())
    return f"B{batch}R{regions}T{tokens}h{heads}d{head_dim}k{topk}{suffix}"


@pytest.mark.parametrize("case", FP32_CASES, ids=_case_id)
def test_triton_matches_reference_fp32(case):
    batch, regions, tokens, heads, head_dim, topk, extra = case
    q, k, v, r_idx = make_inputs(batch, regions, tokens, heads, head_dim, topk, torch.float32, **extra)
    scale = (heads * head_dim) ** -0.5  # BiFormer's legacy scale: qk_dim^-0.5
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], device=DEVICE, dtype=torch.float64)
    expected = run_with_grads(bra_attention_reference, q.double(), k.double(), v.double(), r_idx, heads, scale,
                              grad_out)
    got = run_with_grads(bra_attention_triton, q, k, v, r_idx, heads, scale, grad_out)
    for name, got_tensor, expected_tensor in zip(NAMES, got, expected):
        assert got_tensor.dtype == torch.float32
        torch.testing.assert_close(got_tensor.double(), expected_tensor, rtol=2e-5, atol=2e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=_case_id)
def test_triton_matches_reference_low_precision(case, dtype):
    batch, regions, tokens, heads, head_dim, topk, extra = case
    q, k, v, r_idx = make_inputs(batch, regions, tokens, heads, head_dim, topk, dtype, **extra)
    scale = (heads * head_dim) ** -0.5
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], device=DEVICE, dtype=torch.float64).to(dtype).double()
    exact = run_with_grads(bra_attention_reference, q.double(), k.double(), v.double(), r_idx, heads, scale, grad_out)
    same_dtype_torch = run_with_grads(bra_attention_reference, q, k, v, r_idx, heads, scale, grad_out)
    got = run_with_grads(bra_attention_triton, q, k, v, r_idx, heads, scale, grad_out)
    for name, got_tensor, torch_tensor, exact_tensor in zip(NAMES, got, same_dtype_torch, exact):
        assert got_tensor.dtype == dtype
        kernel_error = (got_tensor.double() - exact_tensor).abs().max().item()
        torch_error = (torch_tensor.double() - exact_tensor).abs().max().item()
        bound = 2 * torch_error + LOW_PRECISION_FLOOR[dtype]
        assert kernel_error <= bound, f"{name}: kernel error {kernel_error:.3g} > {bound:.3g} (torch {dtype}: {torch_error:.3g})"


@pytest.mark.parametrize("seed", range(5))
def test_triton_matches_reference_random_shapes(seed):
    """Shapes drawn from a seeded generator (no hypothesis dependency: the GPU machine runs this file as it is)."""
    generator = torch.Generator().manual_seed(1000 + seed)

    def draw(low, high):
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    batch, regions, tokens, heads = draw(1, 2), draw(1, 6), draw(1, 12), draw(1, 3)
    head_dim = (16, 24, 32)[draw(0, 2)]
    topk = draw(1, regions)
    q, k, v, r_idx = make_inputs(batch, regions, tokens, heads, head_dim, topk, torch.float32, seed=seed)
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], device=DEVICE, dtype=torch.float64)
    expected = run_with_grads(bra_attention_reference, q.double(), k.double(), v.double(), r_idx, heads, 0.2, grad_out)
    got = run_with_grads(bra_attention_triton, q, k, v, r_idx, heads, 0.2, grad_out)
    for name, got_tensor, expected_tensor in zip(NAMES, got, expected):
        torch.testing.assert_close(got_tensor.double(), expected_tensor, rtol=2e-5, atol=2e-5, msg=name)


def test_repeated_routes_count_twice():
    """A region routed twice is attended twice (its tokens enter the softmax twice) and gets both gradients."""
    q, k, v, _ = make_inputs(1, 3, 5, 2, 16, 2, torch.float32)
    r_idx = torch.tensor([[[0, 0], [1, 2], [2, 0]]], device=DEVICE)
    grad_out = torch.randn(1, 3, 5, 32, device=DEVICE, dtype=torch.float64)
    expected = run_with_grads(bra_attention_gather, q.double(), k.double(), v.double(), r_idx, 2, 0.2, grad_out)
    got = run_with_grads(bra_attention_triton, q, k, v, r_idx, 2, 0.2, grad_out)
    for name, got_tensor, expected_tensor in zip(NAMES, got, expected):
        torch.testing.assert_close(got_tensor.double(), expected_tensor, rtol=2e-5, atol=2e-5, msg=name)


def test_backward_is_deterministic():
    """dK/dV come from the transposed routing list, not atomics: two runs agree bit for bit."""
    q, k, v, r_idx = make_inputs(1, 9, 7, 2, 16, 4, torch.float32, seed=3)
    grad_out = torch.randn(1, 9, 7, 32, device=DEVICE)
    first = run_with_grads(bra_attention_triton, q, k, v, r_idx, 2, 0.25, grad_out)
    second = run_with_grads(bra_attention_triton, q, k, v, r_idx, 2, 0.25, grad_out)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "shape",
    [(1, 25, 4, 8, 32, 16), (1, 49, 16, 4, 32, 4), (1, 9, 7, 3, 8, 9), (2, 4, 13, 1, 20, 1)],
    ids=lambda s: "B{}R{}T{}h{}d{}k{}".format(*s),
)
def test_reference_equals_official_gather(shape):
    """The spec (loop over routed slots) and the official gather-then-dense algorithm agree, values and gradients."""
    batch, regions, tokens, heads, head_dim, topk = shape
    q, k, v, r_idx = make_inputs(batch, regions, tokens, heads, head_dim, topk, torch.float64)
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], device=DEVICE, dtype=torch.float64)
    spec = run_with_grads(bra_attention_reference, q, k, v, r_idx, heads, 0.3, grad_out)
    gather = run_with_grads(bra_attention_gather, q, k, v, r_idx, heads, 0.3, grad_out)
    for name, a, b in zip(NAMES, spec, gather):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_heads_split_channels_head_major():
    """Channel h*head_dim + c belongs to head h: permuting whole heads of q, k, v permutes the output's heads."""
    heads, head_dim = 4, 8
    q, k, v, r_idx = make_inputs(1, 4, 5, heads, head_dim, 2, torch.float64)
    out = bra_attention_reference(q, k, v, r_idx, heads, 0.5)
    perm = torch.tensor([2, 0, 3, 1])

    def permute_heads(x):
        return x.unflatten(-1, (heads, -1))[..., perm, :].flatten(-2)

    permuted = bra_attention_reference(permute_heads(q), permute_heads(k), permute_heads(v), r_idx, heads, 0.5)
    torch.testing.assert_close(permuted, permute_heads(out))
    # and a single head sees only its own channels: head 0's output ignores head 1's channels
    q2 = q.clone()
    q2[..., head_dim:] = 0
    torch.testing.assert_close(bra_attention_reference(q2, k, v, r_idx, heads, 0.5)[..., :head_dim], out[..., :head_dim])


def test_region_routing_is_official_topk_of_region_means():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 9, 6, 16, generator=generator, requires_grad=True)
    k = torch.randn(2, 9, 6, 16, generator=generator, requires_grad=True)
    r_idx = region_routing(q, k, topk=3, scale=0.25)
    assert r_idx.shape == (2, 9, 3) and r_idx.dtype == torch.int64 and not r_idx.requires_grad
    for b in range(2):
        for r in range(9):
            affinity = torch.stack([(q[b, r].mean(0) * 0.25) @ k[b, j].mean(0) for j in range(9)])
            best = affinity.argsort(descending=True)[:3]
            assert r_idx[b, r].tolist() == best.tolist()
    with pytest.raises(ValueError, match="topk=10"):
        region_routing(q, k, topk=10, scale=0.25)


def test_bad_inputs_name_the_problem():
    q, k, v, r_idx = make_inputs(1, 4, 5, 2, 16, 2, torch.float32)
    with pytest.raises(ValueError, match="num_heads=3"):
        bra_attention(q, k, v, r_idx, 3, 0.25)
    with pytest.raises(ValueError, match="r_idx has 3 query regions"):
        bra_attention(q, k, v, r_idx[:, :3], 2, 0.25)
    with pytest.raises(ValueError, match="same channels"):
        bra_attention(q, k[..., :16], v, r_idx, 2, 0.25)
    with pytest.raises(ValueError, match="dtypes differ"):
        bra_attention(q, k.half(), v, r_idx, 2, 0.25)


def test_dispatch_follows_zoo_kernels(monkeypatch):
    q, k, v, r_idx = make_inputs(1, 4, 5, 2, 16, 2, torch.float32)
    q.requires_grad_()
    # one op whatever the path (attnzoo::bra_forward); its kernel launches the Triton kernels or not
    outputs = []
    kernel_runs = lambda: launches(  # noqa: E731
        BraAttentionFunction, lambda: outputs.append(bra_attention(q, k, v, r_idx, 2, 0.25))
    )
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert kernel_runs() == 0
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    assert kernel_runs() == 1
    reference_out, triton_out = outputs
    assert "attnzoo_bra_forward" in type(triton_out.grad_fn).__name__
    assert "attnzoo_bra_forward" in type(reference_out.grad_fn).__name__
    torch.testing.assert_close(triton_out, reference_out, rtol=2e-5, atol=2e-5)
    monkeypatch.delenv("ZOO_KERNELS")
    # no override: CUDA tensors take the kernel, CPU tensors the reference (even with the interpreter on)
    assert kernel_runs() == (1 if DEVICE == "cuda" else 0)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_torch_compile_fullgraph(monkeypatch, backend):
    """Both paths trace without graph breaks (fullgraph=True) and give the eager values and gradients."""
    monkeypatch.setenv("ZOO_KERNELS", backend)
    torch._dynamo.reset()
    q, k, v, r_idx = make_inputs(1, 4, 5, 2, 16, 2, torch.float32)
    q.requires_grad_()
    # aot_eager on the CPU (no C++ toolchain needed; it still runs the fake kernels and the autograd tracing);
    # inductor on the GPU.
    compile_backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    compiled = torch.compile(lambda *a: bra_attention(*a, 2, 0.25) * 2, fullgraph=True, backend=compile_backend)
    out = compiled(q, k, v, r_idx)
    (grad_q,) = torch.autograd.grad(out.sum(), q)
    eager = bra_attention_reference(q, k, v, r_idx, 2, 0.25) * 2
    (eager_grad_q,) = torch.autograd.grad(eager.sum(), q)
    torch.testing.assert_close(out, eager, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(grad_q, eager_grad_q, rtol=2e-5, atol=2e-5)


def test_transposed_routing_lists_every_route():
    r_idx = torch.tensor([[[2, 0], [2, 1], [0, 2]], [[1, 1], [0, 2], [2, 0]]])
    start, query_region = bra._transposed_routing(r_idx, key_regions=3)
    assert start.tolist() == [0, 2, 3, 6, 8, 10, 12]
    lists = [sorted(query_region[start[i] : start[i + 1]].tolist()) for i in range(6)]
    assert lists == [[0, 2], [1], [0, 1, 2], [1, 2], [0, 0], [1, 2]]


# Compiles the three kernels to sm_90 machine code without a GPU. Runs in a fresh interpreter because this session's
# kernels were decorated in interpreter mode (TRITON_INTERPRET=1 is decided at import time).
_COMPILE_FOR_HOPPER = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from attnzoo.kernels import bra

for dtype in sys.argv[1:]:
  constexprs = dict(HEAD_DIM_QK=32, HEAD_DIM_V=32, BLOCK_M=64, BLOCK_N=64, BLOCK_DQK=32, BLOCK_DV=32, UPCAST=False,
                    FP32_PRECISION="ieee")
  pointers = {name: "*" + dtype for name in ("Q", "K", "V", "OUT", "DOUT", "DQ", "DK", "DV")}
  pointers.update({name: "*fp32" for name in ("LSE", "DELTA")})
  pointers.update({name: "*i32" for name in ("RIDX", "INCOMING_START", "INCOMING_QUERY_REGION")})
  for kernel in (bra._bra_fwd_kernel, bra._bra_bwd_dq_kernel, bra._bra_bwd_dkv_kernel):
      signature = {}
      for name in kernel.arg_names:
          if name in constexprs:
              signature[name] = "constexpr"
          else:
              signature[name] = pointers.get(name, "fp32" if name in ("qk_scale_log2", "scale") else "i32")
      source = ASTSource(fn=kernel, signature=signature,
                         constexprs={(kernel.arg_names.index(key),): value for key, value in constexprs.items()})
      compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
      assert compiled.asm["cubin"], kernel.fn.__name__
      print(kernel.fn.__name__, "ok")
"""


def test_kernels_compile_for_hopper():
    """The interpreter is lenient about types: the real compiler must accept all three kernels (no GPU needed).
    bf16 only, to keep CI quick; the GPU run compiles every dtype for real."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER, "bf16"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 3, result.stdout


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("biformer_tiny", dict(n_win=2, topks=(1, 2, 4, -2), qk_dims=(32, 64, 64, 64))),
        ("biformer_stl_nchw", dict(n_wins=(2, 2, 2, 2), topks=(1, 2, 4, -1))),
    ],
)
def test_biformer_same_logits_on_both_paths(monkeypatch, name, overrides):
    """A whole BiFormer (shrunk: one block per stage, narrow, 2x2 regions, so the interpreter stays quick) gives the same
    logits and input gradient with ZOO_KERNELS=reference and ZOO_KERNELS=triton."""
    timm = pytest.importorskip("timm")
    import attnzoo.backbones  # noqa: F401  (registers biformer_*)

    torch.manual_seed(0)
    model = timm.create_model(name, depth=(1, 1, 1, 1), embed_dim=(32, 64, 64, 64), num_classes=10, **overrides)
    model = model.to(DEVICE).eval()
    images = torch.randn(1, 3, 64, 64, device=DEVICE)
    results = {}
    for path in ("reference", "triton"):
        monkeypatch.setenv("ZOO_KERNELS", path)
        x = images.clone().requires_grad_()
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.square().sum(), x)
        results[path] = (logits.detach(), grad)
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results["triton"][1], results["reference"][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("budget", [1, 200, 10**9], ids=["block-per-region", "several-regions", "one-block"])
@pytest.mark.parametrize(
    "shape",
    [(2, 9, 7, 2, 8, 4, {}), (1, 5, 6, 2, 12, 2, {"key_regions": 7, "key_tokens": 9, "head_dim_v": 4})],
    ids=["square", "rectangular"],
)
def test_chunked_reference_equals_unchunked(shape, budget):
    """The CPU path (blocks of query regions, recomputing backward) is the spec: values and gradients, float64."""
    batch, regions, tokens, heads, head_dim, topk, extra = shape
    q, k, v, r_idx = make_inputs(batch, regions, tokens, heads, head_dim, topk, torch.float64, **extra)
    q, k, v, r_idx = q.cpu(), k.cpu(), v.cpu(), r_idx.cpu()
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    spec = run_with_grads(bra_attention_reference, q, k, v, r_idx, heads, 0.3, grad_out)
    chunked = run_with_grads(lambda *a: bra.bra_attention_chunked(*a, max_chunk_logits=budget), q, k, v, r_idx,
                             heads, 0.3, grad_out)
    for name, a, b in zip(NAMES, spec, chunked):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    with torch.no_grad():  # the inference path (no autograd.Function: what ONNX export traces)
        torch.testing.assert_close(bra.bra_attention_chunked(q, k, v, r_idx, heads, 0.3, budget), spec[0])


def test_chunked_path_takes_non_contiguous_inputs():
    """Regions cut from a (B, C, H, W) map as biformer_stl_nchw cuts them (a 12x16 map in 1x2 regions) are views with
    channel stride H*W; the chunked path must give the spec's values and gradients for such views too."""
    torch.manual_seed(0)
    maps = torch.randn(3, 1, 8, 12, 16, dtype=torch.float64).unbind(0)  # q, k, v as (B=1, C, H, W)
    q, k, v = (t.permute(0, 2, 3, 1).view(1, 12, 1, 8, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(1, 96, 2, 8)
               for t in maps)  # (B, 96 regions, 2 tokens, C); with one image the kernel's flattening stays a view
    assert not k.is_contiguous()
    r_idx = torch.randint(0, 96, (1, 96, 4))
    grad_out = torch.randn(1, 96, 2, 8, dtype=torch.float64)
    spec = run_with_grads(bra_attention_reference, q, k, v, r_idx, 2, 0.3, grad_out)
    chunked = run_with_grads(lambda *a: bra.bra_attention_chunked(*a, max_chunk_logits=500), q, k, v, r_idx, 2, 0.3,
                             grad_out)
    for name, a, b in zip(NAMES, spec, chunked):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


def test_chunked_reference_never_holds_the_whole_map(monkeypatch):
    """Every logits block stays within the budget, in the forward and in the recomputing backward."""
    q, k, v, r_idx = make_inputs(1, 16, 9, 2, 8, 4, torch.float32)
    q, k, v, r_idx = (t.cpu() for t in (q, k, v, r_idx))
    largest = []
    original = bra._gather_routed

    def spy(heads_first, routes):  # (N, h, Tk, d), (c, topk): this block's logits are c * h * Tq * topk * Tk
        largest.append(routes.shape[0] * heads_first.shape[1] * 9 * routes.shape[1] * heads_first.shape[2])
        return original(heads_first, routes)

    monkeypatch.setattr(bra, "_gather_routed", spy)
    budget = 2 * 9 * 4 * 9 * 3  # three query regions' logits
    q.requires_grad_()
    bra.bra_attention_chunked(q, k, v, r_idx, 2, 0.3, budget).sum().backward()
    whole_map = 2 * 16 * 9 * 4 * 9
    assert largest and max(largest) <= budget < whole_map


def test_chunked_routing_equals_one_block(monkeypatch):
    q, k, _, _ = make_inputs(2, 30, 5, 1, 16, 1, torch.float32, seed=4)
    q, k = q.cpu(), k.cpu()
    whole = region_routing(q, k, topk=5, scale=0.25)
    monkeypatch.setattr(bra, "REFERENCE_CHUNK_LOGITS", 2 * 30 * 4)  # four query regions per block
    assert torch.equal(region_routing(q, k, topk=5, scale=0.25), whole)


def test_chunked_path_leaves_its_inputs_alone():
    """One-token regions make the head-major layout a view of q: scaling must not write into the caller's tensor."""
    q, k, v, r_idx = make_inputs(1, 6, 1, 2, 8, 2, torch.float64)
    q, k, v, r_idx = q.cpu().requires_grad_(), k.cpu(), v.cpu(), r_idx.cpu()
    before = q.detach().clone()
    out = bra.bra_attention_chunked(q, k, v, r_idx, 2, 0.3)
    assert torch.equal(q.detach(), before)
    torch.testing.assert_close(out, bra_attention_reference(q, k, v, r_idx, 2, 0.3), rtol=1e-12, atol=1e-12)
