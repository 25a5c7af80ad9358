"""``zoo bench``: params, GFLOPs, throughput and peak memory for inference and training, with timm peers in the same run.

Results go to ``<out>/bench.json``, ``bench.md`` and ``bench.png`` (throughput vs. the card's top-1, one point per
model, families coloured). Ratios are only meaningful between rows of one run on one machine.

Models are built by ``attnzoo.create_model(name)`` (a carded model with its card's ``model_kwargs``), random weights, at
the measured ``img_size`` where their constructor takes one (position embeddings and windows follow the size).
Timing and peak memory follow attnzoo.tasks.measure (docs/ARCHITECTURE.md, "Measuring"): median of ``iters`` steps after
``warmup`` (CPU: wall clock); peak = MiB allocated by one more step above what was live before it, exact on CUDA, a
lower bound on the CPU (replayed from the profiler's allocation records).
tools/benchmarks/models.py measures its models with :func:`build_model` and :func:`measure_mode` too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..outputs import output_folder, writing
from .measure import (
    ScatterPoint,
    StepMeasurement,
    machine_label,
    markdown_table,
    measure_step,
    plot_throughput_vs_top1,
    write_json,
)

# timm models measured in the same run for reference (names as timm registers them).
PEERS = ("swin_tiny_patch4_window7_224", "convnext_tiny", "pvt_v2_b1", "deit_small_patch16_224")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("infer", "train")


@dataclass
class BenchRow:
    name: str
    family: str
    peer: bool
    params_m: float | None
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


def build_model(name: str, **kwargs) -> torch.nn.Module:
    """``attnzoo.create_model(name)`` with random weights: a carded model gets its card's ``model_kwargs``."""
    from .. import create_model

    return create_model(name, pretrained=False, **kwargs)


def model_step(model: torch.nn.Module, mode: str, *, device: str | torch.device, batch: int, img_size: int,
               amp: str = "none") -> Callable[[], None]:
    """The step that is timed, on random images (``model`` is put in eval/train mode here).

    infer: eval forward without grad. train: forward + cross-entropy on random labels + backward + SGD step
    (lr 1e-4, momentum 0.9). ``amp``: none, bf16 or fp16 autocast on ``device``.
    """
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp={amp!r}: one of {', '.join(AMP_DTYPES)}")
    dev = torch.device(device)
    dtype = AMP_DTYPES[amp]
    images = torch.randn(batch, 3, img_size, img_size, device=dev)

    def autocast():
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    if mode == "infer":
        model.eval()

        @torch.no_grad()
        def infer_step():
            with autocast():
                model(images)

        return infer_step
    if mode == "train":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        labels = torch.randint(0, getattr(model, "num_classes", 1000) or 1000, (batch,), device=dev)

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()

        return train_step
    raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")


def measure_mode(model: torch.nn.Module, mode: str, *, device: str | torch.device, batch: int, img_size: int,
                 amp: str = "none", warmup: int = 2, iters: int = 5, cpu_clock: str = "wall") -> StepMeasurement:
    """Median ms per ``mode`` step and its peak MiB (attnzoo.tasks.measure.measure_step)."""
    step = model_step(model, mode, device=device, batch=batch, img_size=img_size, amp=amp)
    return measure_step(step, device, warmup, iters, cpu_clock=cpu_clock)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def bench_model(name: str, *, device: str = "cpu", batch: int = 8, img_size: int = 224, amp: str = "none",
                train: bool = False, warmup: int = 2, iters: int = 5, peer: bool = False,
                model_kwargs: dict | None = None) -> BenchRow:
    """One row: the model built (with ``model_kwargs``) at ``img_size`` where its constructor takes ``img_size``
    (position embeddings, windows follow the measured size), else as it is, fed ``img_size`` images."""
    from .. import UnknownModelError, count_gflops, get_card
    from ..errors import UserError
    from ..models import family_of
    from ..models.builder import img_size_kwargs

    dev = torch.device(device)
    try:
        card = get_card(name)
    except UnknownModelError:
        card = None
    top1 = card.top1 if card is not None else None
    family = "timm peer" if peer else family_of(name)
    kwargs = dict(model_kwargs or {})
    row = BenchRow(name=name, family=family, peer=peer, params_m=None, gflops=None, top1=top1, device=str(dev),
                   batch=batch, img_size=img_size, amp=amp)
    try:
        if "img_size" not in kwargs:
            kwargs.update(img_size_kwargs(name, img_size, **kwargs))
        model = build_model(name, **kwargs)
    except (ValueError, UserError) as err:  # a size the model cannot take (named with the sizes it can): a row
        row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return row
    row.params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    try:
        row.gflops = round(count_gflops(model, (3, img_size, img_size)), 2)
    except Exception as err:  # a counter failure must not hide the timing
        row.extra["gflops_error"] = f"{type(err).__name__}: {err}"
    model = model.to(dev)
    try:
        for mode in ("infer", "train") if train else ("infer",):
            result = measure_mode(model, mode, device=dev, batch=batch, img_size=img_size, amp=amp, warmup=warmup,
                                  iters=iters)
            setattr(row, f"{mode}_img_s", round(batch / (result.ms / 1e3), 2))
            setattr(row, f"{mode}_peak_mib", _round(result.peak_mib))
    except Exception as err:
        row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def bench_markdown(rows: list[BenchRow], header: str) -> str:
    """bench.md: the header line, then one table row per model ("–" where a value is missing)."""
    cols = ["model", "family", "params (M)", "GFLOPs", "top-1", "infer img/s", "infer peak MiB",
            "train img/s", "train peak MiB"]
    cells = []
    for r in rows:
        name = r.name + (" (timm peer)" if r.peer else "")
        if r.error:
            name += f" **error: {r.error}**"
        cells.append((name, r.family, r.params_m, r.gflops, r.top1, r.infer_img_s, r.infer_peak_mib, r.train_img_s,
                      r.train_peak_mib))
    return header + "\n\n" + markdown_table(cols, cells, missing="–") + "\n"


def bench_plot(rows: list[BenchRow], path: Path, title: str) -> None:
    """bench.png: training throughput (inference when no row was trained) against the card's top-1."""
    key = "train_img_s" if any(r.train_img_s for r in rows) else "infer_img_s"
    points = [ScatterPoint(r.name, r.family, getattr(r, key), r.top1, square=r.peer) for r in rows]
    xlabel = ("training" if key == "train_img_s" else "inference") + " throughput (img/s)"
    plot_throughput_vs_top1(path, points, xlabel=xlabel, title=title)


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
    """Bench every zoo model matching ``pattern`` ("a*,b*": several) plus PEERS; write bench.{json,md,png}.

    A pattern that matches no zoo model is a ``UserError`` (a typo is not an empty table), and so is an ``out`` that
    cannot be written (``attnzoo.outputs``' rule), both before anything is measured."""
    from .. import list_models

    patterns = [p.strip() for p in pattern.split(",")] if pattern else ["*"]
    available = list_models()
    unmatched = [p for p in patterns if not any(fnmatch.fnmatch(n, p) for n in available)]
    if unmatched:
        raise UserError(f"no zoo model matches {', '.join(map(repr, unmatched))} (`zoo list` names them; patterns use "
                        "* and ?, comma-separated)")
    names = [n for n in available if any(fnmatch.fnmatch(n, p) for p in patterns)]
    out = output_folder(out, "--out", create=False)
    jobs = [(n, False) for n in names] + ([(p, True) for p in PEERS] if peers else [])
    rows: list[BenchRow] = []
    for name, is_peer in _progress(jobs):
        rows.append(bench_model(name, device=device, batch=batch, img_size=img_size, amp=amp, train=train,
                                warmup=warmup, iters=iters, peer=is_peer))
    output_folder(out, "--out")
    peak_rule = "" if device.startswith("cuda") else " (CPU peak: profiler allocation records, a lower bound)"
    header = (f"Machine: {machine_label(device)}; torch {torch.__version__}; batch {batch}, {img_size}x{img_size}, "
              f"amp {amp}; median of {iters} steps after {warmup} warm-up{peak_rule}.")
    with writing(out, "--out"):
        write_json(out / "bench.json", {"header": header, "rows": [asdict(r) for r in rows]}, indent=2)
        (out / "bench.md").write_text(bench_markdown(rows, header))
        bench_plot(rows, out / "bench.png", header)
    return rows
