"""``zoo demo``: build every model in the zoo, classify a picture, and print what each costs on this CPU.

The demo is a list of steps (``DEMO_STEPS``); later parts of the project append theirs (e.g. the X-ray detector).
Models are randomly initialised (no machine here can download weights), so the predicted class indices show that the
whole path runs (data config, transforms, forward) — they are not meaningful predictions.
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

__all__ = ["DEMO_STEPS", "DemoStep", "demo_image", "draw_demo_image", "run_demo", "wide_console"]

DEMO_IMAGE = Path(__file__).parent / "assets" / "demo_image.png"
LATENCY_RUNS = 3  # timed runs per model after one warm-up; the median is reported


@dataclass
class DemoStep:
    """One part of the demo: a title and a function of (console, model name pattern)."""

    title: str
    run: Callable[[Console, str], None]


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


def _gflops(name: str, model: torch.nn.Module, input_size) -> float:
    """Counted on a meta-device twin (no arithmetic); on the CPU model if the family's forward needs real values."""
    from .flops import count_gflops
    from .hub import create_model

    try:
        with torch.device("meta"):
            twin = create_model(name, pretrained=False)
        return count_gflops(twin, input_size)
    except (NotImplementedError, RuntimeError):  # e.g. .item() or data-dependent shapes on meta tensors
        return count_gflops(model, input_size)


def wide_console() -> Console:
    """A console for tables: the terminal's width, or 160 columns when the output is a pipe or a log."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def classify_all(console: Console, pattern: str = "*") -> list[dict]:
    """Build each model (random init), classify the demo image, measure GMACs and CPU latency; print the table."""
    import timm

    from .hub import create_model
    from .registry import family_of, list_models

    names = list_models(pattern)
    image = demo_image()
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("building models", total=len(names))
        for name in names:
            progress.update(task, description=f"building {name}")
            model = create_model(name, pretrained=False).eval()
            config = timm.data.resolve_data_config({}, model=model)
            batch = timm.data.create_transform(**config)(image).unsqueeze(0)
            with torch.inference_mode():
                top1 = int(model(batch).argmax(-1))  # doubles as the warm-up pass for the latency runs
            rows.append(dict(
                name=name,
                family=family_of(name),
                params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                gflops=_gflops(name, model, config["input_size"]),
                input_size=tuple(config["input_size"]),
                latency_ms=_median_latency_ms(model, batch),
                top1=top1,
            ))
            del model
            progress.advance(task)

    table = Table(title="attnzoo on this CPU (random weights: class indices only show the path runs)")
    table.add_column("name", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=4))
    table.add_column("family", no_wrap=True)
    for column in ("params (M)", "GFLOPs", "input", "CPU ms (bs 1)", "top-1 class"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["name"], row["family"], f"{row['params_m']:.2f}", f"{row['gflops']:.2f}",
                      "x".join(map(str, row["input_size"][1:])), f"{row['latency_ms']:.1f}", str(row["top1"]))
    console.print(table)
    console.print(f"GFLOPs are GMACs counted by zoo/flops.py; latency is the median of {LATENCY_RUNS} runs with "
                  f"{torch.get_num_threads()} torch threads.")
    return rows


DEMO_STEPS: list[DemoStep] = [
    DemoStep("Model zoo: build every model, classify one picture, count GFLOPs and time it", classify_all),
]


def run_demo(pattern: str = "*", console: Console | None = None) -> None:
    """Run every step of ``DEMO_STEPS`` in order."""
    console = console or wide_console()
    for step in DEMO_STEPS:
        console.rule(step.title)
        step.run(console, pattern)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-image"]:  # regenerates the shipped asset
        DEMO_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        draw_demo_image().save(DEMO_IMAGE)
        print(f"wrote {DEMO_IMAGE}")
    else:
        run_demo()
