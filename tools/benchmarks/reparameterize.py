"""Inference speed of re-parameterised models next to the unfolded ones, in one run (``--reparameterize``).

For each model: eval mode with random BatchNorm statistics (so the fold is not the identity), a folded copy made by
timm's ``reparameterize_model`` (SLAB / PRepBN: every RepBN folded into the neighbouring linear / conv layers), then
alternating timed forwards of the two (no grad), so drift of a shared machine hits both alike. Reports the median
time per batch of each, their ratio, the largest output difference and how many norm modules were folded away.
Timing, table and plot: attnzoo.tasks.measure (docs/ARCHITECTURE.md, "Measuring").
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from attnzoo.tasks.measure import fmt, markdown_table, plot_bars, time_call

from .harness import DEFAULT_CPU_CLOCK

DEFAULT_MODELS = ["slab_deit_tiny", "slab_pvt_tiny", "slab_swin_tiny", "slab_cswin_tiny", "prepbn_deit_tiny",
                  "prepbn_swin_tiny"]
_NORMS = ("BatchNorm1d", "RepBN", "LinearNorm", "LayerNorm")


def _count_norms(model) -> int:
    return sum(type(m).__name__ in _NORMS for m in model.modules())


def measure(name: str, device: str, batch_size: int, img_size: int, warmup: int, repeats: int, *,
            cpu_clock: str = DEFAULT_CPU_CLOCK) -> dict[str, Any]:
    import timm
    from timm.models import reparameterize_model

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=img_size).to(device).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    folded = reparameterize_model(model)
    images = torch.randn(batch_size, 3, img_size, img_size, device=device)
    with torch.no_grad():
        diff = (folded(images) - model(images)).abs().max().item()

        def run(net):
            return lambda: net(images)

        for _ in range(warmup):
            model(images)
            folded(images)
        plain, fused = [], []
        for _ in range(repeats):  # alternate, one call each
            plain.append(time_call(run(model), device, 0, 1, cpu_clock=cpu_clock))
            fused.append(time_call(run(folded), device, 0, 1, cpu_clock=cpu_clock))
    plain_ms, fused_ms = statistics.median(plain), statistics.median(fused)
    return {"model": name, "batch": batch_size, "img_size": img_size, "unfolded_ms": plain_ms,
            "reparameterized_ms": fused_ms, "speedup": plain_ms / fused_ms, "max_abs_diff": diff,
            "norms_before": _count_norms(model), "norms_after": _count_norms(folded)}


def run_reparameterize_benchmark(names, device, batch_size, img_size, warmup, repeats, log=print, *,
                                 cpu_clock: str = DEFAULT_CPU_CLOCK):
    records = []
    for name in names:
        try:
            record = measure(name, device, batch_size, img_size, warmup, repeats, cpu_clock=cpu_clock)
            log(f"  {name:<24} unfolded {record['unfolded_ms']:9.1f} ms  reparameterized "
                f"{record['reparameterized_ms']:9.1f} ms  x{record['speedup']:.3f}  max|diff| {record['max_abs_diff']:.2e}")
        except Exception as error:  # a result, not a crash
            record = {"model": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            log(f"  {name:<24} {record['error']}")
        records.append(record)
    return records


def reparameterize_markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"## Re-parameterised vs unfolded inference ({meta['device_label']}, batch {meta['batch_size']}, "
        f"{meta['img_size']}px, median of {meta['repeats']} alternating calls, CPU clock: {meta['cpu_clock']})",
    ]
    rows = []
    for r in records:
        if "error" in r:
            rows.append((r["model"], f"error: {r['error']}", "", "", "", ""))
            continue
        rows.append((r["model"], fmt(r["unfolded_ms"], 4), fmt(r["reparameterized_ms"], 4), f"{r['speedup']:.3f}x",
                     f"{r['max_abs_diff']:.1e}", f"{r['norms_before']} -> {r['norms_after']}"))
    columns = ["model", "unfolded ms", "reparameterized ms", "speed-up", "max abs diff", "norm modules before -> after"]
    lines += ["", markdown_table(columns, rows)]
    return "\n".join(lines) + "\n"


def plot_reparameterize(path: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    ok = [r for r in records if "error" not in r]
    if not ok:
        return
    series = {"unfolded": {f"ms@{r['model']}": r["unfolded_ms"] for r in ok},
              "reparameterized": {f"ms@{r['model']}": r["reparameterized_ms"] for r in ok}}
    plot_bars(path, f"re-parameterised vs unfolded, {meta['device_label']}", [r["model"] for r in ok], series,
              [("ms", "ms per batch (lower is better)")])
