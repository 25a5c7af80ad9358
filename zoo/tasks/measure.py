"""The one measuring harness: device sync, timing, peak memory, machine label, Markdown tables, plots and JSON.

``zoo bench`` (attnzoo.tasks.bench) and tools/benchmark.py (op, model and re-parameterisation benchmarks) both measure
through this module, so their numbers mean the same thing (docs/ARCHITECTURE.md, "Measuring"). Comparisons are taken
in one run on one machine; absolute numbers carry the machine label they came from.

Timing (:func:`time_call`): ``warmup`` untimed calls, then the median of ``repeats`` timed calls, in milliseconds.
CUDA: a pair of CUDA events around each call (the device is synchronised after the warm-up). CPU: ``cpu_clock="wall"``
(``time.perf_counter``) or ``"process"`` (``time.process_time``: CPU seconds this process used, robust on a machine
shared with other jobs and right for single-threaded runs; multi-threaded it sums the threads' time).

Peak memory (:func:`peak_memory_mib`): MiB allocated by one call *above what was live before it* (inputs, parameters
and optimizer state already allocated are excluded). One rule on each device:

* CUDA: ``torch.cuda.max_memory_allocated`` over the call (exact, allocator-level);
* CPU: torch keeps no CPU allocator statistics, so the peak is replayed from the profiler's allocation records
  (``profile_memory=True``): each op's own allocations net of its own frees, plus the frees between ops, summed in time
  order. Scratch an op allocates and frees inside itself is not seen, so a CPU peak is a **lower bound**; it costs one
  extra, profiled call.

Processes that measure one case each (tools/benchmarks/plugin_bra_memory.py, biformer_cpu_train.py) report the
process's peak resident set instead (:func:`process_peak_rss_mib`), a different quantity, said so in their tables.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MIB = 1024 * 1024
CPU_CLOCKS = ("wall", "process")

__all__ = [
    "CPU_CLOCKS",
    "MIB",
    "ScatterPoint",
    "StepMeasurement",
    "device_label",
    "environment",
    "fmt",
    "machine_label",
    "markdown_table",
    "measure_step",
    "peak_memory_mib",
    "plot_bars",
    "plot_throughput_vs_top1",
    "process_peak_rss_mib",
    "synchronize",
    "time_call",
    "write_json",
]


def _device_type(device: str | torch.device) -> str:
    return device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if _device_type(device) == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: str | torch.device, warmup: int, repeats: int, *,
              cpu_clock: str = "wall") -> float:
    """Median time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup`` calls (see the module doc)."""
    if cpu_clock not in CPU_CLOCKS:
        raise ValueError(f"cpu_clock={cpu_clock!r}: use one of {CPU_CLOCKS}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least one timed call is needed")
    for _ in range(warmup):
        fn()
    synchronize(device)
    cuda = _device_type(device) == "cuda"
    clock = time.process_time if cpu_clock == "process" else time.perf_counter
    samples = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            begin = clock()
            fn()
            samples.append((clock() - begin) * 1e3)
    return statistics.median(samples)


def peak_memory_mib(fn: Callable[[], Any], device: str | torch.device) -> float:
    """Peak MiB allocated by one call of ``fn`` above what was live before it (CPU: a lower bound; module doc)."""
    if _device_type(device) == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
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


@dataclass
class StepMeasurement:
    ms: float  # median milliseconds per call
    peak_mib: float  # peak_memory_mib of one more call (CPU: a lower bound)


def measure_step(fn: Callable[[], Any], device: str | torch.device, warmup: int, repeats: int, *,
                 cpu_clock: str = "wall") -> StepMeasurement:
    """:func:`time_call` then :func:`peak_memory_mib` of ``fn`` (one extra call for the peak)."""
    milliseconds = time_call(fn, device, warmup, repeats, cpu_clock=cpu_clock)
    return StepMeasurement(ms=milliseconds, peak_mib=peak_memory_mib(fn, device))


def process_peak_rss_mib() -> float:
    """This process's peak resident set so far, in MiB (``ru_maxrss``; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------- environment


def environment(device: str | torch.device) -> dict[str, Any]:
    """Versions and hardware of this run (stored in every result's JSON)."""
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
    if _device_type(device) == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
        try:
            import subprocess

            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip().splitlines()[0] or None  # fmt: skip
        except (OSError, subprocess.SubprocessError, IndexError):
            info["driver"] = None
    return info


def device_label(env: dict[str, Any], device: str | torch.device) -> str:
    """One line naming the machine: ``GPU (driver D, CUDA C)`` or ``CPU <processor>, N threads``."""
    if _device_type(device) == "cuda" and "gpu" in env:
        return f"{env.get('gpu')} (driver {env.get('driver')}, CUDA {env.get('cuda')})"
    return f"CPU {env['processor']}, {env['cpu_threads']} threads"


def machine_label(device: str | torch.device) -> str:
    """:func:`device_label` of this machine now."""
    return device_label(environment(device), device)


# ---------------------------------------------------------------------------------------------------- Markdown


def fmt(value: Any, digits: int | None = 3, missing: str = "-") -> str:
    """A table cell: ``missing`` for None, a float with ``digits`` decimals (``str`` when digits is None)."""
    if value is None:
        return missing
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return str(value) if digits is None else f"{value:.{digits}f}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, align: str | None = None,
                   missing: str = "-") -> str:
    """A Markdown table (no trailing newline). ``align``: one letter per column, ``l`` (``---``) or ``r``
    (``---:``); default all ``l``. Cells go through :func:`fmt` with ``digits=None`` (pre-format numbers)."""
    align = align or "l" * len(columns)
    if len(align) != len(columns):
        raise ValueError(f"align={align!r} has {len(align)} letters for {len(columns)} columns")
    lines = ["| " + " | ".join(columns) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell, None, missing) for cell in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(path: str | Path, title: str, groups: list[str], series: dict[str, dict[str, float]],
              panels: list[tuple[str, str]]) -> None:
    """Grouped bar chart, one panel per (metric key, axis label); series: name -> {"metric@group": value}.

    A panel is drawn on a log scale when it has a positive value (ops and models span decades)."""
    plt = _pyplot()
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


@dataclass
class ScatterPoint:
    label: str  # annotated next to the point
    group: str  # one colour per group (e.g. the model family)
    throughput: float | None
    top1: float | None
    square: bool = False  # drawn as a square (e.g. a timm peer) instead of a circle


def plot_throughput_vs_top1(path: str | Path, points: list[ScatterPoint], *, xlabel: str, title: str,
                            ylabel: str = "ImageNet-1k top-1 (%, from the model cards)") -> None:
    """Throughput (x) against top-1 (y), one point per model, groups coloured; points missing either are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups = sorted({p.group for p in points})
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    plotted = 0
    for p in points:
        if p.throughput is None or p.top1 is None:
            continue
        ax.scatter(p.throughput, p.top1, color=colours[p.group], marker="s" if p.square else "o", s=50, label=p.group)
        ax.annotate(p.label, (p.throughput, p.top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
        plotted += 1
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 110), fontsize=9)  # the environment label is longer than the figure is wide
    ax.grid(alpha=0.3)
    if plotted == 0:
        ax.text(0.5, 0.5, "no model has both a throughput and a card top-1", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------------- JSON


def write_json(path: str | Path, payload: Any, *, indent: int = 1) -> None:
    """``payload`` as JSON (values JSON cannot hold are written as ``str``), ending with a newline."""
    Path(path).write_text(json.dumps(payload, indent=indent, default=str) + "\n")
