"""``zoo probe`` as a library: every model's frozen features (cached), every probe trained on them, one leaderboard.

:func:`run_probe` takes :class:`ModelSpec` s (a zoo / timm name, a card, a ``zoo train`` run folder; weights from
the card, a file, or seeded random weights) and an ImageFolder with train/ and val/ (or one folder and a split
fraction), and returns a :class:`Leaderboard`; :func:`write_leaderboard` writes probe.md, probe.json and probe.png.

Under torchrun (``processes`` from ``attnzoo.tasks.classification.start_processes``) every rank extracts its shard
of each model's features and rank 0 writes the one cache entry (``sharding``); then the other ranks leave the process
group (so none waits in a collective while rank 0 trains, however long that takes) and get None; rank 0 alone
trains the probes on the cached features and returns the leaderboard. One process runs the same two phases.
"""

from __future__ import annotations

import importlib.metadata
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...models.builder import card_of, img_size_kwargs
from ...outputs import output_folder, writing
from ...weights import sha256_file
from .. import measure
from ..classification.datasets import ImageFolderScan, build_dataset, find_split, scan_image_folder
from ..classification.distributed import Processes, stop_processes
from ..classification.evaluation import make_eval_loader
from ..classification.models import is_model_folder, load_classifier
from ..images import DEFAULT_MAX_PIXELS
from .cache import CACHE_LAYOUT, FeatureCache, folder_fingerprint
from .features import Features, ProbeError, compact_tokens, extract_features, largest_magnitude
from .sharding import agree, from_primary, gather_shards, largest_across_ranks, merge_shards
from .training import BATCH_RULE, LR_RULE, METHODS, recipe_lines, train_probe

__all__ = ["Leaderboard", "ModelSpec", "ProbeRow", "parse_methods", "run_probe", "split_folder", "write_leaderboard"]


@dataclass
class ModelSpec:
    """One backbone to probe: ``source`` (name, card or run folder), optional ``checkpoint`` (file, URL or card) or
    ``random_init`` (seeded random weights), and constructor ``model_kwargs``."""

    source: str
    checkpoint: str | None = None
    random_init: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the name in the leaderboard (default: source)

    @property
    def name(self) -> str:
        return self.label or self.source


@dataclass
class ProbeRow:
    model: str
    method: str
    top1: float
    top5: float
    params: int
    extract_s: float
    images_per_s: float
    train_s: float
    cached: bool
    feature_shape: list[int]
    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    recipe: dict = field(default_factory=dict)  # what the probe trained with, and the rules (training.recipe_record)


@dataclass
class Leaderboard:
    rows: list[ProbeRow]
    data: str
    classes: list[str]
    num_train: int
    num_val: int
    environment: dict[str, Any]
    extracted: dict[str, int]  # images extracted per model in this run (0: all from the cache)
    settings: dict[str, Any]

    def best(self) -> ProbeRow | None:
        return max(self.rows, key=lambda r: r.top1, default=None)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ProbeError(f"--method {text!r}: unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{','.join(METHODS)}.")
    return list(dict.fromkeys(methods))


def split_folder(scan: ImageFolderScan, val_fraction: float, seed: int) -> tuple[ImageFolderScan, ImageFolderScan]:
    """Split one folder's images per class (a seeded permutation; ``val_fraction`` of each class, at least one image,
    to val) into a train and a val scan of the same root."""
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for name in scan.classes:
        files = scan.images[name]
        if len(files) < 2:
            raise ProbeError(f"{scan.root / name}: class '{name}' has {len(files)} image; splitting it into train and "
                             "val needs at least 2 per class.")
        order = rng.permutation(len(files))
        n_val = min(len(files) - 1, max(1, round(val_fraction * len(files))))
        val[name] = sorted(files[i] for i in order[:n_val])
        train[name] = sorted(files[i] for i in order[n_val:])
    make = lambda images: ImageFolderScan(scan.root, list(scan.classes), images, max_pixels=scan.max_pixels)  # noqa: E731
    return make(train), make(val)


def _scans(data: str, val_fraction: float | None, seed: int, verbose: bool,
           max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, ImageFolderScan]:
    train_dir = find_split(data, "train", required=False)
    if train_dir is None:
        if val_fraction is None:
            raise ProbeError(f"{data}: no train/ folder with class sub-folders; pass an ImageFolder with train/ and "
                             "val/, or one folder of class sub-folders with --val-fraction F to split it.")
        root = find_split(data, "val")
        train, val = split_folder(scan_image_folder(root, verbose=verbose, max_pixels=max_pixels), val_fraction, seed)
        return {"train": train, "val": val}
    if val_fraction is not None:
        raise ProbeError(f"{data} has a train/ folder: --val-fraction splits a folder without one; drop it.")
    val_dir = find_split(data, "val", required=False)
    if val_dir is None or val_dir == Path(data):
        raise ProbeError(f"{data}: a train/ folder but no val/ folder with class sub-folders; add val/ or point "
                         "--data at one folder of class sub-folders with --val-fraction F.")
    scans = {split: scan_image_folder(folder, verbose=verbose, max_pixels=max_pixels)
             for split, folder in (("train", train_dir), ("val", val_dir))}
    if scans["train"].classes != scans["val"].classes:
        only_train = sorted(set(scans["train"].classes) - set(scans["val"].classes))
        only_val = sorted(set(scans["val"].classes) - set(scans["train"].classes))
        raise ProbeError(f"{data}: train/ and val/ have different classes (only in train/: {', '.join(only_train) or '-'}"
                         f"; only in val/: {', '.join(only_val) or '-'}); give both the same class folders.")
    return scans


def _weights_identity(spec: ModelSpec, seed: int) -> str:
    if is_model_folder(spec.source):
        weights = Path(spec.source) / "model.safetensors"
        return f"folder sha256 {sha256_file(weights)}" if weights.is_file() else f"folder {Path(spec.source).resolve()}"
    if spec.checkpoint:
        path = Path(spec.checkpoint)
        return f"file sha256 {sha256_file(path)}" if path.is_file() else f"checkpoint {spec.checkpoint}"
    if spec.random_init:
        return f"random (torch seed {seed})"
    card = card_of(spec.source)
    if card is not None and card.checkpoints:
        return f"card {card.name} {card.checkpoints[0].url} sha256 {card.checkpoints[0].sha256}"
    return f"timm pretrained {spec.source}"


def _build(spec: ModelSpec, img_size: int | None, seed: int) -> torch.nn.Module:
    kwargs = dict(spec.model_kwargs)
    if img_size is not None and "img_size" not in kwargs:
        kwargs.update(img_size_kwargs(spec.source, img_size, **kwargs))
    torch.manual_seed(seed)  # random weights are the seed's
    model = load_classifier(spec.source, spec.checkpoint, random_init=spec.random_init, **kwargs)
    if not hasattr(model, "forward_features"):
        raise ProbeError(f"{spec.name}: the model has no forward_features, so no token map to probe.")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _versions() -> dict[str, str]:
    import timm

    try:
        attnzoo = importlib.metadata.version("attnzoo")
    except importlib.metadata.PackageNotFoundError:
        attnzoo = "unknown"
    return {"attnzoo": attnzoo, "timm": timm.__version__, "torch": torch.__version__, "cache_layout": CACHE_LAYOUT}


def run_probe(models: list[ModelSpec], data: str, methods: list[str], *, cache_dir: str | Path,
              img_size: int | None = None, crop_pct: float | None = None, batch_size: int = 64, workers: int = 0,
              device: str = "cpu", seed: int = 0, epochs: int | None = None, val_fraction: float | None = None,
              probe_threads: int | None = 1, probe_kwargs: dict[str, dict] | None = None, progress: bool = True,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, log: Callable[[str], None] | None = None,
              processes: Processes | None = None) -> Leaderboard | None:
    """Probe every model with every method on ``data``; features come from ``cache_dir`` when its entry's key
    matches, else they are extracted (and cached). ``probe_kwargs``: per method, the probe's constructor arguments
    (e.g. ``{"mp": {"hidden_dim": 64}}``); ``probe_threads``: torch's CPU threads while the probes train.
    ``processes``: the torchrun processes (default: this one, on ``device``); the extraction is sharded across them,
    and only rank 0 logs, trains and gets the leaderboard (the others get None)."""
    processes = processes or Processes(torch.device(device))
    primary = processes.is_primary
    log = (log or (lambda message: print(f"zoo: probe: {message}", file=sys.stderr))) if primary else (lambda m: None)
    progress = progress and primary
    if not models:
        raise ProbeError("no model to probe; name at least one.")
    scans = _scans(data, val_fraction, seed, verbose=progress, max_pixels=max_pixels)
    classes = scans["train"].classes
    if len(classes) < 2:
        raise ProbeError(f"{data}: one class folder ({classes[0]}); probing needs at least two classes.")
    context = _Context(scans, {c: i for i, c in enumerate(classes)}, folder_fingerprint(scans), _versions(),
                       FeatureCache(cache_dir, warn=lambda message: log(message)), processes, img_size, crop_pct,
                       batch_size, workers, seed, val_fraction, progress, log)
    settings = {"methods": methods, "img_size": img_size, "crop_pct": crop_pct, "seed": seed, "epochs": epochs,
                "val_fraction": val_fraction, "device": device, "cache": str(cache_dir), "probe_kwargs": probe_kwargs,
                "probe_threads": probe_threads, "processes": processes.world_size}
    features, extracted = {}, {}
    for spec in models:  # every rank: the features of every model, sharded
        features[spec.name], extracted[spec.name] = _model_features(spec, context)
    if processes.distributed:
        stop_processes(processes)  # the other ranks are done: none waits in a collective while rank 0 trains
    if not primary:
        return None
    rows: list[ProbeRow] = []
    for spec in models:  # rank 0: the probes, on the cached features (memory-mapped: read as the probes need them)
        splits = features[spec.name]
        rows.extend(_probe_rows(spec.name, splits["train"], splits["val"], methods, len(classes),
                                extracted[spec.name] == 0, seed=seed, epochs=epochs, device=processes.device,
                                threads=probe_threads, probe_kwargs=probe_kwargs or {}))
    env = measure.environment(device)
    return Leaderboard(rows, str(data), classes, scans["train"].num_images, scans["val"].num_images, env, extracted,
                       settings)


@dataclass
class _Context:
    """What every model's extraction shares within one :func:`run_probe`."""

    scans: dict[str, ImageFolderScan]
    class_to_idx: dict[str, int]
    fingerprint: str
    versions: dict[str, Any]
    cache: FeatureCache
    processes: Processes
    img_size: int | None
    crop_pct: float | None
    batch_size: int
    workers: int
    seed: int
    val_fraction: float | None
    progress: bool
    log: Callable[[str], None]


def _model_features(spec: ModelSpec, c: _Context) -> tuple[dict[str, Features] | None, int]:
    """``spec``'s features (rank 0: memory-mapped from its cache entry, so they stay readable even if a later model of
    this run replaces that entry; None on the other ranks) and the images extracted for it in this run (0: the entry
    was in the cache already). Rank 0 reads the cache entry; on a miss it holds the entry's lock, every rank extracts
    its shard of each split, and rank 0 merges them and writes the entry. Each step ends with :func:`agree`, so a
    failure on one rank ends every rank."""
    from timm.data import resolve_model_data_config

    processes, primary = c.processes, c.processes.is_primary
    model = key = error = None
    try:
        model = _build(spec, c.img_size, c.seed).to(processes.device)
        overrides = {k: v for k, v in (("img_size", c.img_size), ("crop_pct", c.crop_pct)) if v is not None}
        data_config = resolve_model_data_config(model, args=overrides)
        key = {"model": spec.source, "model_kwargs": spec.model_kwargs, "input_size": list(data_config["input_size"]),
               "weights": _weights_identity(spec, c.seed), "data_config": data_config, "folder": c.fingerprint,
               "split": {"val_fraction": c.val_fraction, "seed": c.seed if c.val_fraction is not None else None},
               **c.versions}
    except Exception as err:  # noqa: BLE001 (every rank learns of it in agree, which raises it again here)
        error = err
    agree(processes, error, f"{spec.name}: building the model")
    lock = None
    try:
        cached = None
        if primary:
            try:
                cached = c.cache.load(key)
                if cached is None:
                    lock = c.cache.lock(key)
                    cached = c.cache.load(key, quiet=True)  # written by the run that held the lock
            except Exception as err:  # noqa: BLE001
                error = err
        agree(processes, error, f"{spec.name}: reading the feature cache")
        if from_primary(processes, cached is not None):
            c.log(f"{spec.name}: features from the cache {c.cache.entry(key)} (nothing extracted)")
            return cached, 0
        shards: dict[str, Features | None] = {}
        try:
            for split, scan in c.scans.items():
                dataset = build_dataset(scan, c.class_to_idx, shard=(processes.rank, processes.world_size))
                shards[split] = None
                if len(dataset):
                    loader = make_eval_loader(dataset, data_config, c.batch_size, c.workers, processes.device)
                    shards[split] = extract_features(model, loader, processes.device, name=spec.name,
                                                     desc=f"{spec.name} {split}", progress=c.progress, compact=False)
        except Exception as err:  # noqa: BLE001
            error = err
        agree(processes, error, f"{spec.name}: extracting the features")
        del model
        splits = {}
        for split, shard in shards.items():
            largest = largest_across_ranks(largest_magnitude(shard.tokens) if shard is not None else 0.0, processes)
            if shard is not None:
                shard.tokens = compact_tokens(shard.tokens, largest)
            gathered = gather_shards(processes, shard)
            if primary:
                splits[split] = merge_shards(gathered)
        entry = None
        if primary:
            try:
                entry = c.cache.save(key, splits, processes=processes.world_size)
            except Exception as err:  # noqa: BLE001
                error = err
        agree(processes, error, f"{spec.name}: writing the feature cache")
        images = sum(f.num_images for f in splits.values())  # rank 0's count (the others' is never read)
        on = f" on {processes.world_size} processes" if processes.distributed else ""
        c.log(f"{spec.name}: extracted {images} images' features{on} into {entry}")
        return (c.cache.load(key, quiet=True) or splits) if primary else None, images
    finally:
        if lock is not None:
            lock.release()


def _probe_rows(name: str, train: Features, val: Features, methods: list[str], num_classes: int, cached: bool, *,
                seed: int, epochs: int | None, device: torch.device, threads: int | None,
                probe_kwargs: dict[str, dict]) -> list[ProbeRow]:
    extract_s = train.seconds + val.seconds
    images = train.num_images + val.num_images
    rows = []
    for method in methods:
        result = train_probe(method, train, val, num_classes, seed=seed, epochs=epochs, device=device,
                             threads=threads, probe_kwargs=probe_kwargs.get(method))
        rows.append(ProbeRow(name, method, result.top1, result.top5, result.params, extract_s,
                             images / extract_s if extract_s > 0 else float("nan"), result.seconds, cached,
                             list(train.tokens.shape[1:]), result.epochs, result.batch_size, result.lr,
                             result.recipe))
    return rows


COLUMNS = ("model", "method", "top-1", "top-5", "probe params", "tokens x channels", "extraction s (img/s)",
           "probe training s")


def leaderboard_markdown(board: Leaderboard) -> str:
    rows = sorted(board.rows, key=lambda r: (-r.top1, r.model, r.method))
    table = measure.markdown_table(COLUMNS, (
        (r.model, r.method, f"{r.top1:.1f}", f"{r.top5:.1f}", f"{r.params:,}", "x".join(map(str, r.feature_shape)),
         f"{r.extract_s:.1f} ({r.images_per_s:.0f})" + (" cached" if r.cached else ""), f"{r.train_s:.1f}")
        for r in rows), align="llrrrlrr")
    text = (f"{board.data}: {len(board.classes)} classes, {board.num_train} train / {board.num_val} val images; "
            f"{measure.device_label(board.environment, board.settings['device'])}\n\n{table}")
    lines = recipe_lines({r.method: r.recipe for r in board.rows})
    if lines:
        text += (f"\n\nProbe recipes on the {board.num_train} training images (batch: {BATCH_RULE}; lr: "
                 f"{LR_RULE}):\n" + "\n".join(lines))
    return text


def write_leaderboard(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """probe.md (the table), probe.json (rows, settings, environment), probe.png (top-1 vs extraction throughput)."""
    out = output_folder(out, "--out")
    paths = {"md": out / "probe.md", "json": out / "probe.json", "png": out / "probe.png"}
    with writing(out, "--out"):
        _write_leaderboard_files(board, paths)
    return paths


def _write_leaderboard_files(board: Leaderboard, paths: dict[str, Path]) -> None:
    paths["md"].write_text(leaderboard_markdown(board) + "\n")
    measure.write_json(paths["json"], {
        "data": board.data, "classes": board.classes, "num_train": board.num_train, "num_val": board.num_val,
        "settings": board.settings, "environment": board.environment, "extracted": board.extracted,
        "rows": [asdict(r) for r in board.rows], "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    points = [measure.ScatterPoint(label=r.model, group=r.method, throughput=r.images_per_s, top1=r.top1)
              for r in board.rows]
    measure.plot_throughput_vs_top1(
        paths["png"], points, xlabel="feature extraction throughput (images/s)",
        ylabel=f"top-1 on {Path(board.data).name} val (%)",
        title=f"zoo probe on {board.data}: {measure.device_label(board.environment, board.settings['device'])}")
