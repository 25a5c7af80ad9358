"""Shared measuring and reporting for tools/benchmark.py: time, peak memory, JSON / Markdown / PNG.

Comparisons are taken in one run on one machine (DESIGN.md "Measuring"): every case runs every implementation
back to back, and ratios are against the case's baseline implementation.

Peak memory is the peak of bytes allocated *above what was live before the call* (inputs and parameters excluded):
* CUDA: ``torch.cuda.max_memory_allocated`` (exact, allocator-level);
* CPU: torch has no CPU allocator statistics, so the peak is replayed from the profiler's allocation records
  (``profile_memory=True``): each op's own allocations net of its own frees, plus the frees between ops, summed in time
  order. Scratch an op allocates and frees inside itself is not seen, so CPU peaks are a lower bound.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MIB = 1024 * 1024


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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# CPU clock: "process" (CPU seconds this process used; robust on a shared machine where other jobs take the cores,
# right for single-threaded runs) or "wall". tools/benchmark.py sets it from --cpu-clock.
CPU_CLOCK = {"name": "process"}


def time_call(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    """Median time of ``fn`` in milliseconds (CUDA: events around each call; CPU: see CPU_CLOCK)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            clock = time.process_time if CPU_CLOCK["name"] == "process" else time.perf_counter
            begin = clock()
            fn()
            samples.append((clock() - begin) * 1e3)
    return statistics.median(samples)


def peak_memory_mib(fn: Callable[[], Any], device: str) -> float:
    """Peak bytes allocated by ``fn`` above what was live before it, in MiB (see the module doc for CPU)."""
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated() - before) / MIB
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda event: event.time_range.start)
    live = peak = 0
    for event in events:
        # '[memory]' records are frees/allocations outside any op; an op's own net allocation is self_cpu_memory_usage
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / MIB


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
        try:
            import subprocess

            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip() or None  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def device_label(env: dict[str, Any], device: str) -> str:
    if device.startswith("cuda"):
        return f"{env.get('gpu')} (driver {env.get('driver')}, CUDA {env.get('cuda')})"
    return f"CPU {env['processor']}, {env['cpu_threads']} threads"


def run_op_benchmark(
    bench: OpBenchmark,
    cases: list[Case],
    device: str,
    dtype: torch.dtype,
    implementations: list[str],
    warmup: int,
    repeats: int,
    log: Callable[[str], None] = print,
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
                record.update(measure_op_impl(fn, bench.make_inputs(case, device, dtype, True), device, warmup, repeats))
            except Exception as error:  # an OOM or a missing backend is a result, not a crash
                record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            finally:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            records.append(record)
            log(_one_line(record))
    _add_ratios(records, bench.baseline)
    return records


def measure_op_impl(fn: Callable[[dict], torch.Tensor], inputs: dict, device: str, warmup: int, repeats: int) -> dict:
    grad = inputs.pop("grad_out")
    grad_leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.requires_grad]

    def forward():
        with torch.no_grad():
            return fn(inputs)

    def forward_backward():
        for leaf in grad_leaves:
            leaf.grad = None
        fn(inputs).backward(grad)

    result = {"fwd_ms": time_call(forward, device, warmup, repeats), "fwd_peak_mib": peak_memory_mib(forward, device)}
    result["fwd_bwd_ms"] = time_call(forward_backward, device, warmup, repeats)
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


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


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
        "",
        "| case | impl | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB | fwd+bwd speedup | fwd+bwd memory x |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if "skipped" in r:
            continue
        if "error" in r:
            lines.append(f"| {r['case']} | {r['impl']} | {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['impl']} | {_fmt(r['fwd_ms'])} | {_fmt(r['fwd_bwd_ms'])} | {_fmt(r['fwd_peak_mib'], 1)}"
            f" | {_fmt(r['fwd_bwd_peak_mib'], 1)} | {_fmt(r.get('fwd_bwd_speedup'), 2)}"
            f" | {_fmt(r.get('fwd_bwd_memory_saving'), 2)} |"
        )
    skipped = sorted({f"{r['impl']} ({r['skipped']})" for r in records if "skipped" in r})
    lines += [""] + [f"- {note}" for note in bench.notes] + [f"- not measured here: {item}" for item in skipped]
    return "\n".join(lines) + "\n"


def plot_bars(path: Path, title: str, groups: list[str], series: dict[str, dict[str, float]], panels: list[tuple[str, str]]):
    """Grouped bar chart, one panel per (metric key, axis label); series: impl -> {metric@group: value}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 1.2 * len(groups) + 3), 3.6 * len(panels)), squeeze=False)
    names = list(series)
    width = 0.8 / max(1, len(names))
    for axis, (metric, ylabel) in zip(axes[:, 0], panels):
        for i, name in enumerate(names):
            values = [series[name].get(f"{metric}@{group}", math.nan) for group in groups]
            positions = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
            axis.bar(positions, values, width, label=name)
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
        axis.set_ylabel(ylabel)
        if any(v > 0 for s in series.values() for v in s.values() if not math.isnan(v)):
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
