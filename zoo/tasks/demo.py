"""``zoo demo``: build every model in the zoo, classify a picture, and print what each costs on this CPU.

The demo is a list of steps (``DEMO_STEPS``): the model zoo table, then the X-ray detector (zoo/tasks/xray/demo.py).
Models are randomly initialised (no machine here can download weights), so the predicted class indices show that the
whole path runs (data config, transforms, forward) — they are not meaningful predictions. ``python -m attnzoo.tasks.demo
--write-image`` regenerates the shipped picture (zoo/assets/demo_image.png).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..outputs import output_folder, writing

__all__ = ["DEMO_STEPS", "DemoOptions", "DemoStep", "demo_image", "draw_demo_image", "run_demo", "wide_console"]

DEMO_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "demo_image.png"  # zoo/assets, shipped
LATENCY_RUNS = 3  # timed runs per model after one warm-up; the median is reported
DEFAULT_MAX_GFLOPS = 20.0
DEFAULT_BUDGET_S = 150.0  # no CPU run starts after this; keeps the zoo step within ~3 minutes on 2 cores
DEFAULT_XRAY_MINUTES = 12.0  # the X-ray step's time guard (about twice its expected time on 2 cores); 0 skips it
DEFAULT_OUT_DIR = "demo_out"


def draw_demo_image(size: int = 256, seed: int = 0) -> Image.Image:
    """A deterministic synthetic photo-like picture: a sky-to-ground gradient, a sun, a house and some texture."""
    rows = np.linspace(0.0, 1.0, size)[:, None]
    sky = np.array([90, 150, 230]) * (1 - rows[..., None]) + np.array([40, 120, 50]) * rows[..., None]
    pixels = np.broadcast_to(sky, (size, size, 3)).copy()
    pixels += np.random.default_rng(seed).normal(0.0, 6.0, pixels.shape)  # sensor-like noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = size / 256
    draw.ellipse([190 * s, 20 * s, 240 * s, 70 * s], fill=(250, 220, 80))
    draw.rectangle([70 * s, 120 * s, 170 * s, 200 * s], fill=(180, 70, 50))
    draw.polygon([(60 * s, 122 * s), (120 * s, 70 * s), (180 * s, 122 * s)], fill=(90, 50, 40))
    draw.rectangle([108 * s, 160 * s, 132 * s, 200 * s], fill=(60, 40, 30))
    return image


def demo_image() -> Image.Image:
    """The shipped demo picture (zoo/assets/demo_image.png), drawn afresh if the file is missing."""
    if DEMO_IMAGE.is_file():
        return Image.open(DEMO_IMAGE).convert("RGB")
    return draw_demo_image()


def _median_latency_ms(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """Median wall time of LATENCY_RUNS forward passes (call it after a warm-up pass)."""
    with torch.inference_mode():
        times = []
        for _ in range(LATENCY_RUNS):
            start = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def wide_console() -> Console:
    """A console for tables: the terminal's width, or 160 columns when the output is a pipe or a log."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


@dataclass
class DemoOptions:
    """What the demo covers.

    Every model matching ``pattern`` is built on the meta device and counted (params, GFLOPs: no arithmetic). Then,
    cheapest first, models of at most ``max_gflops`` are built for real and run on the CPU until ``budget_s`` seconds
    (counted from the start of the step) have gone; the rest are listed as not run. FocalNet-L/XL/H alone would take
    minutes each on 2 cores.
    """

    pattern: str = "*"
    max_gflops: float = DEFAULT_MAX_GFLOPS
    budget_s: float = DEFAULT_BUDGET_S
    xray_minutes: float = DEFAULT_XRAY_MINUTES  # the X-ray step's time guard; 0 skips the step
    xray_iterations: int | None = None  # training iterations of the X-ray step (None: xray.demo.DEMO_ITERATIONS)
    out_dir: str = DEFAULT_OUT_DIR


@dataclass
class DemoStep:
    """One part of the demo: a title and a function of (console, options)."""

    title: str
    run: Callable[[Console, DemoOptions], object]


def _count(name: str) -> dict:
    """Params and GMACs from a meta-device twin: nothing allocated, no arithmetic."""
    import timm

    from ..flops import count_gflops
    from ..models import build_model, family_of

    with torch.device("meta"):
        twin = build_model(name, pretrained=False)
    config = timm.data.resolve_data_config({}, model=twin)
    row = dict(name=name, family=family_of(name), params_m=sum(p.numel() for p in twin.parameters()) / 1e6,
               config=config, gflops=None, latency_ms=None, top1=None, skipped=None)
    try:
        row["gflops"] = count_gflops(twin, config["input_size"])
    except (NotImplementedError, RuntimeError):  # a forward that reads tensor values cannot run on meta tensors
        pass  # counted on the real model below
    return row


def _run(row: dict, image: Image.Image) -> None:
    """Build the model for real (random init), classify the picture and time it; fills ``row`` in."""
    import timm

    from ..flops import count_gflops
    from ..models import build_model

    model = build_model(row["name"], pretrained=False).eval()
    batch = timm.data.create_transform(**row["config"])(image).unsqueeze(0)
    with torch.inference_mode():
        row["top1"] = int(model(batch).argmax(-1))  # doubles as the warm-up pass for the latency runs
    row["latency_ms"] = _median_latency_ms(model, batch)
    if row["gflops"] is None:
        row["gflops"] = count_gflops(model, row["config"]["input_size"])


def classify_all(console: Console, options: DemoOptions) -> list[dict]:
    """Count every model, run the cheapest ones on the CPU within the time budget, and print the zoo table."""
    from ..models import list_models

    started = time.perf_counter()  # the budget covers counting too, so the whole step stays within it
    names = list_models(options.pattern)
    image = demo_image()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        counting = progress.add_task("counting", total=len(names))
        rows = []
        for name in names:
            progress.update(counting, description=f"building {name} on the meta device")
            rows.append(_count(name))
            progress.advance(counting)
        running = progress.add_task("running", total=len(rows))
        for row in sorted(rows, key=lambda r: (r["gflops"] is None, r["gflops"] or 0.0)):
            if row["gflops"] is not None and row["gflops"] > options.max_gflops:
                row["skipped"] = f"> {options.max_gflops:g} GFLOPs"
            elif time.perf_counter() - started > options.budget_s:
                row["skipped"] = "time budget"
            else:
                progress.update(running, description=f"building and running {row['name']} (random init)")
                _run(row, image)
            progress.advance(running)

    table = Table(title="attnzoo on this CPU (random weights: the class index only shows that the path runs)")
    table.add_column("name", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=4))
    table.add_column("family", no_wrap=True)
    for column in ("params (M)", "GFLOPs", "input", "CPU ms (bs 1)", "top-1 class"):
        table.add_column(column, justify="right")
    for row in rows:
        gflops = f"{row['gflops']:.2f}" if row["gflops"] is not None else "?"
        size = "x".join(map(str, row["config"]["input_size"][1:]))
        if row["skipped"]:
            latency, top1 = "not run", row["skipped"]
        else:
            latency, top1 = f"{row['latency_ms']:.1f}", str(row["top1"])
        table.add_row(row["name"], row["family"], f"{row['params_m']:.2f}", gflops, size, latency, top1)
    console.print(table)
    console.print(f"GFLOPs are GMACs counted by zoo/flops.py; CPU ms is the median of {LATENCY_RUNS} runs with "
                  f"{torch.get_num_threads()} torch threads.")
    if any(row["skipped"] for row in rows):
        console.print(f"Not run: above {options.max_gflops:g} GFLOPs, or after the {options.budget_s:g} s budget "
                      "(cheapest models run first); `zoo demo --max-gflops inf --budget-s inf` runs everything.")
    return rows


def xray_detector(console: Console, options: DemoOptions) -> dict | None:
    """Synthetic PIDray set -> train a small SDANet detector for a fixed number of iterations (train.py) -> per-split
    AP (test.py) -> ``zoo xray detect`` on held-out bags."""
    if options.xray_minutes <= 0:
        console.print("X-ray step skipped (xray_minutes=0)")
        return None
    from .xray.demo import DEMO_ITERATIONS, run_xray_demo

    out = Path(options.out_dir) / "xray"
    with writing(out, "--out"):  # a write the file system refuses (full disk, read-only): one line naming --out
        return run_xray_demo(out, iterations=options.xray_iterations or DEMO_ITERATIONS,
                             guard_minutes=options.xray_minutes, log=lambda text: console.print(text, markup=False,
                                                                                                highlight=False))


DEMO_STEPS: list[DemoStep] = [
    DemoStep("Model zoo: build every model, classify one picture, count GFLOPs and time it", classify_all),
    DemoStep("X-ray: train SDANet on a synthetic PIDray-style set, evaluate per split, `zoo xray detect` held-out bags",
             xray_detector),
]


def run_demo(
    pattern: str = "*",
    console: Console | None = None,
    max_gflops: float = DEFAULT_MAX_GFLOPS,
    budget_s: float = DEFAULT_BUDGET_S,
    xray_minutes: float = DEFAULT_XRAY_MINUTES,
    out_dir: str = DEFAULT_OUT_DIR,
    xray_iterations: int | None = None,
) -> None:
    """Run every step of ``DEMO_STEPS`` in order (see DemoOptions for what the arguments limit)."""
    console = console or wide_console()
    options = DemoOptions(pattern=pattern, max_gflops=max_gflops, budget_s=budget_s, xray_minutes=xray_minutes,
                          xray_iterations=xray_iterations, out_dir=out_dir)
    if xray_minutes > 0:  # the X-ray step writes under --out: the zoo's output-path rule, before any step runs
        output_folder(out_dir, "--out", create=False)
        output_folder(Path(out_dir) / "xray", "--out", create=False)
    for step in DEMO_STEPS:
        console.rule(step.title)
        step.run(console, options)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-image"]:  # regenerates the shipped asset
        DEMO_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        draw_demo_image().save(DEMO_IMAGE)
        print(f"wrote {DEMO_IMAGE}")
    else:
        run_demo()
