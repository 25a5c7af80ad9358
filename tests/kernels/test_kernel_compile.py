"""Every Triton kernel compiles for sm_90 at a configuration its launcher chooses, without spills, in shared memory.

Triton's CUDA backend compiles without a GPU: ``tools/kernel_check.py --quick`` forces the dispatcher to the Triton
path, replaces each launch by a compile for the target (``triton.compile`` + ``cuobjdump -res-usage`` from the
Triton wheel) and reports registers, spill bytes and shared memory. It runs in its own process because the tests'
kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py), which replaces the JIT the
check compiles with. ``make kernel-check`` runs the full check (every model, sm_80 and sm_90) into docs/kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# every kernel the zoo launches, in each dtype (the launchers pick per-dtype tiles, warps and stages)
KERNELS = {
    "_bra_fwd_kernel", "_bra_bwd_dq_kernel", "_bra_bwd_dkv_kernel",
    "_flow_fwd_kernel", "_flow_bwd_kernel", "_flow_causal_fwd_kernel", "_flow_causal_bwd_kernel",
    "_slab_fwd_kernel", "_slab_bwd_kernel",
    "_agg_fwd_kernel", "_agg_bwd_query_kernel", "_agg_bwd_local_kv_kernel", "_agg_bwd_pool_kv_kernel",
    "_hs_fwd_kernel", "_hs_bwd_dq_kernel", "_hs_bwd_dkv_kernel",
}  # fmt: skip
DTYPES = {"fp32", "fp16", "bf16"}
SM90_SHARED_LIMIT = 227 * 1024


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("kernel_check")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "kernel_check.py"), "--quick", "--targets", "90", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )  # fmt: skip
    path = out / "compile_report.json"
    assert path.exists(), f"kernel_check wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(path.read_text())


def test_every_kernel_and_dtype_was_compiled(report):
    _, data = report
    assert not data["meta"]["problems"], data["meta"]["problems"]
    seen = {(row["kernel"], row["dtype"]) for row in data["rows"]}
    missing = {(k, d) for k in KERNELS for d in DTYPES} - seen
    assert not missing, f"kernels never launched by the quick workloads: {sorted(missing)}"


def test_no_compile_error_spill_or_shared_memory_overflow_on_sm90(report):
    proc, data = report
    bad = []
    for row in data["rows"]:
        result = row["targets"]["sm_90"]
        what = f"{row['kernel']} {row['dtype']} {row['constexprs']} warps={row['num_warps']} stages={row['num_stages']}"
        if not result["ok"]:
            bad.append(f"{what}: {result['error']}")
        elif result["shared"] > SM90_SHARED_LIMIT:
            bad.append(f"{what}: {result['shared']} B shared memory, over the H100's {SM90_SHARED_LIMIT} B")
        elif result["spill_bytes"]:
            bad.append(f"{what}: {result['spill_bytes']} spill bytes")
    assert not bad, "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-2000:]  # the tool itself exits 1 on any failure, spill or overflow
