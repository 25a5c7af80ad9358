"""Op benchmarks for tools/benchmark.py: cases, the op registration, the case x implementation loop, op tables/plots.

Timing, peak memory, the machine label, Markdown, plots and JSON come from attnzoo.tasks.measure, the one measuring harness
(docs/ARCHITECTURE.md, "Measuring"): every case runs every implementation back to back in one run on one machine, and
ratios are against the case's baseline implementation. Peak memory is the peak of bytes allocated *above what was live
before the call* (inputs and parameters excluded): exact on CUDA, a lower bound on the CPU (profiler allocation records).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attnzoo.tasks.measure import fmt, markdown_table, peak_memory_mib, plot_bars, time_call

# CPU clock of tools/benchmark.py (--cpu-clock): "process" by default, robust on a shared machine (see attnzoo.tasks.measure)
DEFAULT_CPU_CLOCK = "process"


@dataclass
class Case:
    """One shape to measure. ``params`` go to the op module's input maker; ``label`` names it in tables."""

    label: str
    params: dict[str, Any]


@dataclass
class OpBenchmark:
    """What an op module (tools/benchmarks/<op>.py) registers.

    make_inputs(case, device, dtype, requires_grad) -> dict of tensors/values for the implementations;
    implementations: name -> (fn(inputs) -> Tensor, devices it runs on);
    presets: name -> list of cases; default_preset(device) picks one when --preset is not given.
    """

    name: str
    description: str
    make_inputs: Callable[[Case, str, torch.dtype, bool], dict]
    implementations: dict[str, tuple[Callable[[dict], torch.Tensor], tuple[str, ...]]]
    presets: dict[str, list[Case]]
    default_preset: Callable[[str], str]
    baseline: str
    notes: list[str] = field(default_factory=list)


def run_op_benchmark(
    bench: OpBenchmark,
    cases: list[Case],
    device: str,
    dtype: torch.dtype,
    implementations: list[str],
    warmup: int,
    repeats: int,
    log: Callable[[str], None] = print,
    *,
    cpu_clock: str = DEFAULT_CPU_CLOCK,
) -> list[dict[str, Any]]:
    """Every case x implementation: fwd (no grad) and fwd+bwd time and peak memory. Failures are recorded, not raised."""
    records = []
    for case in cases:
        for impl in implementations:
            fn, devices = bench.implementations[impl]
            record: dict[str, Any] = {"case": case.label, "params": case.params, "impl": impl}
            if not any(device.startswith(d) for d in devices):
                record["skipped"] = f"{impl} runs on {', '.join(devices)} only"
                records.append(record)
                continue
            try:
                inputs = bench.make_inputs(case, device, dtype, True)
                record.update(measure_op_impl(fn, inputs, device, warmup, repeats, cpu_clock=cpu_clock))
            except Exception as error:  # an OOM or a missing backend is a result, not a crash
                record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            finally:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            records.append(record)
            log(_one_line(record))
    _add_ratios(records, bench.baseline)
    return records


def measure_op_impl(fn: Callable[[dict], torch.Tensor], inputs: dict, device: str, warmup: int, repeats: int, *,
                    cpu_clock: str = DEFAULT_CPU_CLOCK) -> dict:
    grad = inputs.pop("grad_out")
    grad_leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.requires_grad]

    def forward():
        with torch.no_grad():
            return fn(inputs)

    def forward_backward():
        for leaf in grad_leaves:
            leaf.grad = None
        fn(inputs).backward(grad)

    result = {"fwd_ms": time_call(forward, device, warmup, repeats, cpu_clock=cpu_clock),
              "fwd_peak_mib": peak_memory_mib(forward, device)}
    result["fwd_bwd_ms"] = time_call(forward_backward, device, warmup, repeats, cpu_clock=cpu_clock)
    for leaf in grad_leaves:
        leaf.grad = None
    result["fwd_bwd_peak_mib"] = peak_memory_mib(forward_backward, device)
    return result


def _one_line(record: dict[str, Any]) -> str:
    if "error" in record or "skipped" in record:
        return f"  {record['case']:<34} {record['impl']:<10} {record.get('error') or record.get('skipped')}"
    return (
        f"  {record['case']:<34} {record['impl']:<10} fwd {record['fwd_ms']:9.3f} ms {record['fwd_peak_mib']:9.1f} MiB"
        f" | fwd+bwd {record['fwd_bwd_ms']:9.3f} ms {record['fwd_bwd_peak_mib']:9.1f} MiB"
    )


def _add_ratios(records: list[dict[str, Any]], baseline: str) -> None:
    """speedup = baseline time / this time; memory_saving = baseline peak / this peak (both > 1 mean better)."""
    base = {r["case"]: r for r in records if r["impl"] == baseline and "fwd_ms" in r}
    for record in records:
        reference = base.get(record["case"])
        if reference is None or "fwd_ms" not in record:
            continue
        for key, ratio_key in (("fwd_ms", "fwd_speedup"), ("fwd_bwd_ms", "fwd_bwd_speedup")):
            record[ratio_key] = reference[key] / record[key] if record[key] > 0 else math.nan
        for key, ratio_key in (("fwd_peak_mib", "fwd_memory_saving"), ("fwd_bwd_peak_mib", "fwd_bwd_memory_saving")):
            record[ratio_key] = reference[key] / record[key] if record[key] > 0 else math.nan


def op_markdown(bench: OpBenchmark, records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"## {bench.name}: {bench.description}",
        "",
        f"Device: {meta['device_label']}; dtype {meta['dtype']}; median of {meta['repeats']} runs after "
        f"{meta['warmup']} warm-up"
        + (f" ({meta.get('cpu_clock', 'wall')} clock)" if meta["device"] == "cpu" else "")
        + f"; preset `{meta['preset']}`. "
        f"Ratios are against `{bench.baseline}` in this run "
        "(speedup = its time / this time; memory x = its peak / this peak). Peak memory = MiB allocated above the "
        "inputs" + (" (CPU: profiler allocation records, a lower bound)." if meta["device"] == "cpu" else "."),
    ]
    rows = []
    for r in records:
        if "skipped" in r:
            continue
        if "error" in r:
            rows.append((r["case"], r["impl"], r["error"], "", "", "", "", ""))
            continue
        rows.append((r["case"], r["impl"], fmt(r["fwd_ms"]), fmt(r["fwd_bwd_ms"]), fmt(r["fwd_peak_mib"], 1),
                     fmt(r["fwd_bwd_peak_mib"], 1), fmt(r.get("fwd_bwd_speedup"), 2),
                     fmt(r.get("fwd_bwd_memory_saving"), 2)))
    columns = ["case", "impl", "fwd ms", "fwd+bwd ms", "fwd peak MiB", "fwd+bwd peak MiB", "fwd+bwd speedup",
               "fwd+bwd memory x"]
    lines += ["", markdown_table(columns, rows, align="llrrrrrr")]
    skipped = sorted({f"{r['impl']} ({r['skipped']})" for r in records if "skipped" in r})
    lines += [""] + [f"- {note}" for note in bench.notes] + [f"- not measured here: {item}" for item in skipped]
    return "\n".join(lines) + "\n"


def plot_op(path: Path, bench: OpBenchmark, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    groups = list(dict.fromkeys(r["case"] for r in records))
    series: dict[str, dict[str, float]] = {}
    for r in records:
        if "fwd_ms" not in r:
            continue
        values = series.setdefault(r["impl"], {})
        values[f"fwd_bwd_ms@{r['case']}"] = r["fwd_bwd_ms"]
        values[f"fwd_bwd_peak_mib@{r['case']}"] = r["fwd_bwd_peak_mib"]
    plot_bars(path, f"{bench.name} fwd+bwd, {meta['device_label']}, {meta['dtype']}", groups, series,
              [("fwd_bwd_ms", "fwd+bwd time (ms)"), ("fwd_bwd_peak_mib", "fwd+bwd peak (MiB)")])
