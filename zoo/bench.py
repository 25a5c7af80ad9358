"""`zoo bench`: params, GFLOPs, throughput and peak memory for inference and training, with timm peers in the same run.

Results go to ``<out>/bench.json``, ``bench.md`` and ``bench.png`` (throughput vs. the card's top-1, one point per
model, families coloured). Ratios are only meaningful between rows of one run on one machine.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps, above what was allocated before.
On the CPU it is not reported ("–"): there is no allocator counter, and resident-set growth hides memory that earlier
models freed back into the C allocator, so it would read near zero for every model after the first.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# timm models measured in the same run for reference (names as timm registers them).
PEERS = ("swin_tiny_patch4_window7_224", "convnext_tiny", "pvt_v2_b1", "deit_small_patch16_224")


@dataclass
class BenchRow:
    name: str
    family: str
    peer: bool
    params_m: float
    gflops: float | None
    top1: float | None
    device: str
    batch: int
    img_size: int
    amp: str
    infer_img_s: float | None = None
    infer_peak_mib: float | None = None
    train_img_s: float | None = None
    train_peak_mib: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Median seconds per step and peak memory in MiB (None on the CPU)."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = None
    return statistics.median(times), peak


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def bench_model(name: str, *, device: str = "cpu", batch: int = 8, img_size: int = 224, amp: str = "none",
                train: bool = False, warmup: int = 2, iters: int = 5, peer: bool = False) -> BenchRow:
    import timm

    from .cards import get_card, has_card
    from .flops import count_gflops
    from .registry import family_of

    dev = torch.device(device)
    card = get_card(name) if has_card(name) else None
    top1 = card.top1 if card is not None else None
    family = "timm peer" if peer else family_of(name)
    model = timm.create_model(name, pretrained=False, **(card.model_kwargs if card else {}))
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    row = BenchRow(name=name, family=family, peer=peer, params_m=round(params_m, 2), gflops=None, top1=top1,
                   device=str(dev), batch=batch, img_size=img_size, amp=amp)
    try:
        row.gflops = round(count_gflops(model, (3, img_size, img_size)), 2)
    except Exception as err:  # a counter failure must not hide the timing
        row.extra["gflops_error"] = f"{type(err).__name__}: {err}"
    model = model.to(dev)
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def autocast():
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    try:
        model.eval()

        @torch.no_grad()
        def infer_step():
            with autocast():
                model(x)

        sec, peak = _timed(infer_step, dev, warmup, iters)
        row.infer_img_s, row.infer_peak_mib = round(batch / sec, 2), _round(peak)
        if train:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            target = torch.randint(0, model.num_classes, (batch,), device=dev)

            def train_step():
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = torch.nn.functional.cross_entropy(model(x), target)
                loss.backward()
                opt.step()

            sec, peak = _timed(train_step, dev, warmup, iters)
            row.train_img_s, row.train_peak_mib = round(batch / sec, 2), _round(peak)
    except Exception as err:
        row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _markdown(rows: list[BenchRow], header: str) -> str:
    cols = ["model", "family", "params (M)", "GFLOPs", "top-1", "infer img/s", "infer peak MiB",
            "train img/s", "train peak MiB"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(v):
        return "–" if v is None else str(v)

    for r in rows:
        name = r.name + (" (timm peer)" if r.peer else "")
        if r.error:
            name += f" **error: {r.error}**"
        lines.append("| " + " | ".join(fmt(v) for v in (name, r.family, r.params_m, r.gflops, r.top1, r.infer_img_s,
                                                          r.infer_peak_mib, r.train_img_s, r.train_peak_mib)) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[BenchRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "train_img_s" if any(r.train_img_s for r in rows) else "infer_img_s"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    families = sorted({r.family for r in rows})
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    plotted = 0
    for r in rows:
        y = getattr(r, key)
        if y is None or r.top1 is None:
            continue
        ax.scatter(y, r.top1, color=colours[r.family], marker="s" if r.peer else "o", s=50,
                   label=r.family)
        ax.annotate(r.name, (y, r.top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
        plotted += 1
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel(("training" if key == "train_img_s" else "inference") + " throughput (img/s)")
    ax.set_ylabel("ImageNet-1k top-1 (%, from the model cards)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if plotted == 0:
        ax.text(0.5, 0.5, "no model has both a throughput and a card top-1", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (driver/CUDA {torch.version.cuda})"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _progress(jobs):
    """A rich progress bar where rich is installed (it is a core dependency; the bare GPU image may lack it)."""
    try:
        from rich.progress import Progress
    except ImportError:
        for i, job in enumerate(jobs):
            print(f"[{i + 1}/{len(jobs)}] {job[0]}", flush=True)
            yield job
        return
    with Progress() as progress:
        task = progress.add_task("benchmarking", total=len(jobs))
        for job in jobs:
            progress.update(task, description=job[0])
            yield job
            progress.advance(task)


def run_bench(pattern: str | None = None, *, device: str = "cpu", batch: int = 8, img_size: int = 224,
              amp: str = "none", train: bool = False, peers: bool = True, out: str | Path = "bench_out",
              warmup: int = 2, iters: int = 5) -> list[BenchRow]:
    from .registry import list_models

    patterns = [p.strip() for p in pattern.split(",")] if pattern else ["*"]  # "a*,b*": several patterns
    names = [n for n in list_models() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    jobs = [(n, False) for n in names] + ([(p, True) for p in PEERS] if peers else [])
    rows: list[BenchRow] = []
    for name, is_peer in _progress(jobs):
        rows.append(bench_model(name, device=device, batch=batch, img_size=img_size, amp=amp, train=train,
                                warmup=warmup, iters=iters, peer=is_peer))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Machine: {machine_name(device)}; torch {torch.__version__}; batch {batch}, {img_size}x{img_size}, "
              f"amp {amp}; median of {iters} steps after {warmup} warm-up.")
    (out / "bench.json").write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2))
    (out / "bench.md").write_text(_markdown(rows, header))
    _plot(rows, out / "bench.png", header)
    return rows
