"""Flow-Attention benchmark: the op's paths (time, peak memory) and, on CUDA, Flowformer training with each path.

    python tools/benchmarks/flow.py                  # CPU: reference (non-causal, causal) vs the official causal form
    python tools/benchmarks/flow.py --device cuda    # + the Triton kernel, and Flowformer training img/s and memory
    python tools/benchmarks/flow.py --quick          # fewer, smaller rows

Rows (forward + backward of the op, fp32 on CPU, bf16 inputs on CUDA):

- ``reference``: kernels.flow.flow_attention_reference (the official order; the causal form chunked, linear memory).
- ``naive``: kernels.flow.flow_attention_causal_naive, the official causal formula with its (B, h, L, d, dv)
  cumulative state; skipped (with the size it would need) when that state alone passes ``--naive-cap-gib``.
- ``triton``: the fused kernel (CUDA only: interpreted Triton on the CPU measures the interpreter, not the kernel).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on the CPU the process's peak resident
set above the resident set after making the inputs, each row measured in a fresh subprocess (so one row's peak does
not hide the next), single-threaded unless OMP_NUM_THREADS says otherwise (on a shared, loaded machine two
OpenMP threads measured 16x slower than one). Times are medians. Ratios are meaningful within one run on one
machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 1024**3
MIB = 1024**2


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(spec, device, dtype):
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (spec["batch"], spec["heads"], spec["length"], spec["head_dim"])
    return [torch.randn(shape, generator=generator).to(device=device, dtype=dtype).requires_grad_() for _ in range(3)]


def _op(spec):
    from kernels.flow import FlowAttentionFunction, flow_attention_causal_naive, flow_attention_reference

    impl, causal = spec["impl"], spec["causal"]
    if impl == "reference":
        return lambda q, k, v: flow_attention_reference(q, k, v, causal=causal)
    if impl == "naive":
        return lambda q, k, v: flow_attention_causal_naive(q, k, v)
    if impl == "triton":
        return lambda q, k, v: FlowAttentionFunction.apply(q, k, v, causal, 1e-6, 0.0)
    raise ValueError(f"unknown implementation {impl!r}")


def measure_op(spec: dict) -> dict:
    """Median forward+backward time and peak extra memory of one op configuration, in this process."""
    import torch

    device = spec["device"]
    dtype = getattr(torch, spec["dtype"])
    q, k, v = _inputs(spec, device, dtype)
    op = _op(spec)
    grad = torch.randn(q.shape[:3] + (v.shape[3],), device=device, dtype=dtype)

    def step():
        out = op(q, k, v)
        out.backward(grad)
        q.grad = k.grad = v.grad = None

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()  # warm-up (compiles the kernels) and the memory peak
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        times = []
        for _ in range(spec["repeats"]):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        base = _rss_bytes()
        step()  # warm-up (first-call allocations and lazy initialisation)
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss is KiB on Linux
    return {**spec, "ms": statistics.median(times) * 1e3, "peak_mib": max(peak, 0) / MIB}


def _measure_in_subprocess(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--_measure", json.dumps(spec)], capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})  # fmt: skip
    if result.returncode != 0:
        return {**spec, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def op_rows(device: str, quick: bool, naive_cap_gib: float) -> list[dict]:
    dtype = "bfloat16" if device == "cuda" else "float32"
    impls = ["reference", "triton"] if device == "cuda" else ["reference"]
    rows = []
    # non-causal: Flowformer's stage-1 and stage-4 attention shapes (12 heads)
    batch = 8 if device == "cpu" else 128
    vision = [(3136, 8), (49, 64)] if not quick else [(3136, 8)]
    for length, head_dim in vision:
        for impl in impls:
            rows.append(dict(impl=impl, causal=False, batch=batch if not quick else 2, heads=12, length=length,
                             head_dim=head_dim))  # fmt: skip
    # causal: long sequences, 4 heads of 64 (CPU) / 8 heads of 64 (CUDA)
    heads = 4 if device == "cpu" else 8
    if device == "cuda":
        lengths = [1024, 4096, 16384, 65536] if not quick else [1024, 16384]
    else:
        lengths = [1024, 4096, 16384, 65536] if not quick else [1024, 4096]
    for length in lengths:
        for impl in impls + ["naive"]:
            rows.append(dict(impl=impl, causal=True, batch=1, heads=heads, length=length, head_dim=64))
    results = []
    for row in rows:
        spec = dict(row, device=device, dtype=dtype, repeats=3 if not quick else 1)
        state_gib = spec["batch"] * spec["heads"] * spec["length"] * spec["head_dim"] ** 2 * 4 / GIB
        if spec["impl"] == "naive" and state_gib > naive_cap_gib:
            results.append({**spec, "skipped": f"its (B, h, L, d, dv) state alone is {state_gib:.1f} GiB"})
            continue
        results.append(measure_op(spec) if device == "cuda" else _measure_in_subprocess(spec))
        _print_row(results[-1])
    return results


def _train_step(model, optimizer, images, labels):
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def model_rows(device: str, quick: bool) -> list[dict]:
    """Flowformer training steps (bf16 autocast, AdamW) with each attention path: img/s and peak memory (CUDA)."""
    import timm
    import torch

    import backbones  # noqa: F401  (registers flowformer)

    if device != "cuda":
        return []
    batch, steps, warmup = (128, 20, 5) if not quick else (32, 5, 2)
    results = []
    for path in ("reference", "triton"):
        os.environ["ZOO_KERNELS"] = path
        torch.manual_seed(0)
        model = timm.create_model("flowformer", drop_path_rate=0.2).cuda().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        images = torch.randn(batch, 3, 224, 224, device="cuda")
        labels = torch.randint(0, 1000, (batch,), device="cuda")
        for _ in range(warmup):
            _train_step(model, optimizer, images, labels)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = _train_step(model, optimizer, images, labels)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        results.append(dict(model="flowformer", path=path, batch=batch, img_per_s=batch * steps / elapsed,
                            peak_gib=torch.cuda.max_memory_allocated() / GIB, loss=float(loss)))  # fmt: skip
        print(f"flowformer train ({path}): {results[-1]['img_per_s']:.0f} img/s, {results[-1]['peak_gib']:.1f} GiB",
              flush=True)  # fmt: skip
        del model, optimizer
        torch.cuda.empty_cache()
    os.environ.pop("ZOO_KERNELS", None)
    return results


def _print_row(row: dict) -> None:
    print("  " + _format_row(row), flush=True)


def _format_row(row: dict) -> str:
    shape = f"B{row['batch']} h{row['heads']} L{row['length']} d{row['head_dim']}"
    kind = "causal" if row["causal"] else "non-causal"
    if "skipped" in row:
        return f"| {kind} | {shape} | {row['impl']} | skipped | {row['skipped']} |"
    if "error" in row:
        return f"| {kind} | {shape} | {row['impl']} | error | {row['error']} |"
    return f"| {kind} | {shape} | {row['impl']} | {row['ms']:.1f} | {row['peak_mib']:.0f} |"


def markdown(op_results: list[dict], model_results: list[dict], device_name: str) -> str:
    lines = [f"Flow-Attention forward+backward on {device_name}", "",
             "| form | shape | path | ms | peak MiB |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [_format_row(r) for r in op_results]
    if model_results:
        lines += ["", "| model | path | batch | img/s | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['path']} | {r['batch']} | {r['img_per_s']:.0f} | {r['peak_gib']:.1f} |"
                  for r in model_results]  # fmt: skip
    return "\n".join(lines)


def run(device: str = "cpu", quick: bool = False, naive_cap_gib: float = 0.5) -> dict:
    """Entry point for tools/benchmark.py's registry: returns {"ops": [...], "models": [...], "markdown": str}."""
    import torch

    if device == "cuda":
        device_name = f"{torch.cuda.get_device_name()} (driver {torch.version.cuda})"
    else:
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        device_name = f"CPU, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s) per row"
    ops = op_rows(device, quick, naive_cap_gib)
    models = model_rows(device, quick)
    return {"device": device_name, "ops": ops, "models": models, "markdown": markdown(ops, models, device_name)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller rows")
    parser.add_argument("--naive-cap-gib", type=float, default=0.5,
                        help="skip the official causal form when its (B, h, L, d, dv) state passes this size")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:  # child process: one CPU row
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(measure_op(json.loads(args._measure))))
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA device is visible")
    results = run(args.device, args.quick, args.naive_cap_gib)
    print(results["markdown"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
