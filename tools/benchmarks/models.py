"""Whole-model throughput: our BiFormer (kernel path and reference path) next to timm peers, in one run.

Models are built and measured by attnzoo.tasks.bench (``build_model``: ``attnzoo.create_model``, with a card's model_kwargs;
``measure_mode``: the step, timing and peak memory of attnzoo.tasks.measure, docs/ARCHITECTURE.md "Measuring"), the same
harness as ``zoo bench``. Training step = forward + cross-entropy on random labels + backward + SGD step; inference =
eval forward without grad. On CUDA both run under bf16 autocast (the setting of issue 4's targets). Peak = MiB allocated
by one more step above what was live before it (CPU: profiler allocation records, a lower bound). A model whose
attention has a kernel path (``KERNEL_PATH_PREFIXES``) is measured once per kernel path (``ZOO_KERNELS=reference`` and
``=triton``; only the reference on the CPU).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from attnzoo.tasks.measure import device_label, environment, fmt, markdown_table, plot_bars

from .harness import DEFAULT_CPU_CLOCK

DEFAULT_MODELS = [
    "biformer_tiny",
    "biformer_small",
    "agent_pvt_tiny",
    "agent_swin_tiny",
    "flowformer",
    "swin_tiny_patch4_window7_224",
    "convnext_tiny",
    "poolformer_s12",
]
# models whose attention has a kernel path: measured once per path (reference, triton) on CUDA
KERNEL_PATH_PREFIXES = ("biformer", "agent", "flowformer")


def kernel_paths(model_name: str, device: str, paths: list[str]) -> list[str | None]:
    if not model_name.startswith(KERNEL_PATH_PREFIXES):
        return [None]
    if not device.startswith("cuda"):
        return ["reference"]
    return list(paths)


@contextlib.contextmanager
def zoo_kernels(path: str | None):
    previous = os.environ.get("ZOO_KERNELS")
    if path is not None:
        os.environ["ZOO_KERNELS"] = path
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ZOO_KERNELS", None)
        else:
            os.environ["ZOO_KERNELS"] = previous


def run_model_benchmark(
    model_names: list[str],
    device: str,
    batch_size: int,
    img_size: int,
    modes: list[str],
    paths: list[str],
    warmup: int,
    repeats: int,
    log=print,
    *,
    cpu_clock: str = DEFAULT_CPU_CLOCK,
) -> list[dict[str, Any]]:
    records = []
    for name in model_names:
        for path in kernel_paths(name, device, paths):
            label = name if path is None else f"{name}[{path}]"
            for mode in modes:
                record: dict[str, Any] = {"model": name, "path": path or "-", "label": label, "mode": mode,
                                          "batch": batch_size, "img_size": img_size}
                try:
                    with zoo_kernels(path):
                        record.update(measure_model(name, mode, device, batch_size, img_size, warmup, repeats,
                                                                   cpu_clock=cpu_clock))
                except Exception as error:  # an OOM or a model that is not registered is a result, not a crash
                    record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                finally:
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                records.append(record)
                if "error" in record:
                    log(f"  {label:<40} {mode:<5} {record['error']}")
                else:
                    log(f"  {label:<40} {mode:<5} {record['img_per_s']:9.1f} img/s {record['ms_per_iter']:9.2f} ms"
                        f" {record['peak_mib']:9.1f} MiB")
    _add_ratios(records)
    return records


def measure_model(name: str, mode: str, device: str, batch_size: int, img_size: int, warmup: int, repeats: int, *,
                  cpu_clock: str = DEFAULT_CPU_CLOCK) -> dict[str, Any]:
    """One model and mode through attnzoo.tasks.bench (bf16 autocast on CUDA, fp32 on the CPU)."""
    from attnzoo.tasks.bench import build_model, measure_mode

    model = build_model(name, num_classes=1000).to(device)
    amp = "bf16" if device.startswith("cuda") else "none"
    result = measure_mode(model, mode, device=device, batch=batch_size, img_size=img_size, amp=amp, warmup=warmup,
                          iters=repeats, cpu_clock=cpu_clock)
    return {
        "ms_per_iter": result.ms,
        "img_per_s": batch_size / (result.ms / 1e3),
        "peak_mib": result.peak_mib,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def _add_ratios(records: list[dict[str, Any]]) -> None:
    """vs_reference: img/s over the same model's reference path (kernel-path models only)."""
    base = {(r["model"], r["mode"]): r for r in records if r["path"] == "reference" and "img_per_s" in r}
    for record in records:
        reference = base.get((record["model"], record["mode"]))
        if reference is not None and "img_per_s" in record and record["path"] not in ("-", "reference"):
            record["speedup_vs_reference"] = record["img_per_s"] / reference["img_per_s"]
            if record.get("peak_mib") and reference.get("peak_mib"):
                record["memory_vs_reference"] = record["peak_mib"] / reference["peak_mib"]


def models_markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "## models: training and inference throughput",
        "",
        f"Device: {meta['device_label']}; batch {meta['batch_size']}, {meta['img_size']}x{meta['img_size']}"
        + (", bf16 autocast" if meta["device"].startswith("cuda") else ", fp32")
        + f"; median of {meta['repeats']} steps after {meta['warmup']} warm-up"
        + (f" ({meta.get('cpu_clock', 'wall')} clock)" if meta["device"] == "cpu" else "")
        + ". Train step = fwd + CE + bwd + SGD."
        + (" Peak: profiler allocation records, a lower bound." if meta["device"] == "cpu" else ""),
    ]
    rows = []
    for r in records:
        if "error" in r:
            rows.append((r["model"], r["path"], r["mode"], r["error"], "", "", "", "", ""))
            continue
        rows.append((r["model"], r["path"], r["mode"], fmt(r["img_per_s"], 1), fmt(r["ms_per_iter"], 2),
                     fmt(r.get("peak_mib"), 0), fmt(r["params_m"], 1), fmt(r.get("speedup_vs_reference"), 2),
                     fmt(r.get("memory_vs_reference"), 2)))
    columns = ["model", "kernel path", "mode", "img/s", "ms/step", "peak MiB", "params (M)", "x reference img/s",
               "x reference peak"]
    lines += ["", markdown_table(columns, rows, align="lllrrrrrr")]
    return "\n".join(lines) + "\n"


def plot_models(path: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    groups = list(dict.fromkeys(r["label"] for r in records))
    series: dict[str, dict[str, float]] = {}
    for r in records:
        if "img_per_s" in r:
            series.setdefault(r["mode"], {})[f"img_per_s@{r['label']}"] = r["img_per_s"]
    plot_bars(path, f"models, {meta['device_label']}, batch {meta['batch_size']}", groups, series,
              [("img_per_s", "images / s")])


def kernel_path_table(argv, default_models: str, description: str, cpu_paths=("reference",),
                      path_labels: dict[str, str] | None = None) -> int:
    """Command line shared by the per-op model scripts (``python -m benchmarks.agent`` / ``.flow``): each model, mode
    and kernel path measured in one run, printed as a Markdown table with ratios to the reference path.

    cpu_paths: the kernel paths that can run on the CPU (the Triton ones only run on CUDA, or in the interpreter).
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default=default_models)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)  # the harness's CPU convention: 2 shared threads make timings swing
    batch = args.batch_size or (128 if cuda else 2)
    warmup, repeats = args.warmup or (5 if cuda else 1), args.repeats or (20 if cuda else 2)
    paths = ("reference", "triton") if cuda else tuple(cpu_paths)
    labels = path_labels or {}
    print(f"# {device_label(environment(args.device), args.device)}; batch {batch}; "
          f"{'bf16 autocast' if cuda else 'fp32'}; ZOO_KERNELS={' vs ='.join(paths)}")
    print("| model | mode | path | img/s | ms/iter | peak MiB | speedup vs reference | memory vs reference |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            base = None
            for path in paths:
                with zoo_kernels(path):
                    r = measure_model(name, mode, args.device, batch, 224, warmup, repeats)
                ratio = mem = "-"
                if base is None:
                    base = r
                else:
                    ratio = f"{r['img_per_s'] / base['img_per_s']:.2f}"
                    if r.get("peak_mib") and base.get("peak_mib"):
                        mem = f"{r['peak_mib'] / base['peak_mib']:.2f}"
                peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "-"
                print(f"| {name} | {mode} | {labels.get(path, path)} | {r['img_per_s']:.1f} | "
                      f"{r['ms_per_iter']:.2f} | {peak} | {ratio} | {mem} |", flush=True)
    return 0
