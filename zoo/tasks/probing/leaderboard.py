"""``zoo probe`` as a library: every model's frozen features (cached), every probe trained on them, one leaderboard.

:func:`run_probe` takes :class:`ModelSpec` s (a zoo / timm name, a card, a ``zoo train`` run folder; weights from
the card, a file, or seeded random weights) and an ImageFolder with train/ and val/ (or one folder and a split
fraction), and returns a :class:`Leaderboard`; :func:`write_leaderboard` writes probe.md, probe.json and probe.png.
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
from ...weights import sha256_file
from .. import measure
from ..classification.datasets import ImageFolderScan, build_dataset, find_split, scan_image_folder
from ..classification.evaluation import make_eval_loader
from ..classification.models import is_model_folder, load_classifier
from ..images import DEFAULT_MAX_PIXELS
from .cache import CACHE_LAYOUT, FeatureCache, folder_fingerprint
from .features import Features, ProbeError, extract_features
from .training import METHODS, train_probe

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
              max_pixels: int | None = DEFAULT_MAX_PIXELS, log: Callable[[str], None] | None = None) -> Leaderboard:
    """Probe every model with every method on ``data``; features come from ``cache_dir`` when its entry's key
    matches, else they are extracted (and cached). ``probe_kwargs``: per method, the probe's constructor arguments
    (e.g. ``{"mp": {"hidden_dim": 64}}``); ``probe_threads``: torch's CPU threads while the probes train."""
    log = log or (lambda message: print(f"zoo: probe: {message}", file=sys.stderr))
    if not models:
        raise ProbeError("no model to probe; name at least one.")
    torch_device = torch.device(device)
    scans = _scans(data, val_fraction, seed, verbose=progress, max_pixels=max_pixels)
    classes = scans["train"].classes
    if len(classes) < 2:
        raise ProbeError(f"{data}: one class folder ({classes[0]}); probing needs at least two classes.")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    fingerprint = folder_fingerprint(scans)
    cache = FeatureCache(cache_dir, warn=lambda message: log(message))
    versions = _versions()
    rows: list[ProbeRow] = []
    extracted: dict[str, int] = {}
    settings = {"methods": methods, "img_size": img_size, "crop_pct": crop_pct, "seed": seed, "epochs": epochs,
                "val_fraction": val_fraction, "device": device, "cache": str(cache_dir), "probe_kwargs": probe_kwargs,
                "probe_threads": probe_threads}
    for spec in models:
        from timm.data import resolve_model_data_config

        model = _build(spec, img_size, seed).to(torch_device)
        overrides = {k: v for k, v in (("img_size", img_size), ("crop_pct", crop_pct)) if v is not None}
        data_config = resolve_model_data_config(model, args=overrides)
        key = {"model": spec.source, "model_kwargs": spec.model_kwargs, "input_size": list(data_config["input_size"]),
               "weights": _weights_identity(spec, seed), "data_config": data_config, "folder": fingerprint,
               "split": {"val_fraction": val_fraction, "seed": seed if val_fraction is not None else None},
               **versions}
        splits = cache.load(key)
        if splits is None:
            splits = {}
            for split, scan in scans.items():
                loader = make_eval_loader(build_dataset(scan, class_to_idx), data_config, batch_size, workers,
                                          torch_device)
                splits[split] = extract_features(model, loader, torch_device, name=spec.name,
                                                 desc=f"{spec.name} {split}", progress=progress)
            entry = cache.save(key, splits)
            extracted[spec.name] = sum(f.num_images for f in splits.values())
            log(f"{spec.name}: extracted {extracted[spec.name]} images' features into {entry}")
        else:
            extracted[spec.name] = 0
            log(f"{spec.name}: features from the cache {cache.entry(key)} (nothing extracted)")
        del model
        train, val = splits["train"], splits["val"]
        rows.extend(_probe_rows(spec.name, train, val, methods, len(classes), extracted[spec.name] == 0,
                                seed=seed, epochs=epochs, device=torch_device, threads=probe_threads,
                                probe_kwargs=probe_kwargs or {}))
    env = measure.environment(device)
    return Leaderboard(rows, str(data), classes, scans["train"].num_images, scans["val"].num_images, env, extracted,
                       settings)


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
                             list(train.tokens.shape[1:]), result.epochs, result.batch_size, result.lr))
    return rows


COLUMNS = ("model", "method", "top-1", "top-5", "probe params", "tokens x channels", "extraction s (img/s)",
           "probe training s")


def leaderboard_markdown(board: Leaderboard) -> str:
    rows = sorted(board.rows, key=lambda r: (-r.top1, r.model, r.method))
    table = measure.markdown_table(COLUMNS, (
        (r.model, r.method, f"{r.top1:.1f}", f"{r.top5:.1f}", f"{r.params:,}", "x".join(map(str, r.feature_shape)),
         f"{r.extract_s:.1f} ({r.images_per_s:.0f})" + (" cached" if r.cached else ""), f"{r.train_s:.1f}")
        for r in rows), align="llrrrlrr")
    return (f"{board.data}: {len(board.classes)} classes, {board.num_train} train / {board.num_val} val images; "
            f"{measure.device_label(board.environment, board.settings['device'])}\n\n{table}")


def write_leaderboard(board: Leaderboard, out: str | Path) -> dict[str, Path]:
    """probe.md (the table), probe.json (rows, settings, environment), probe.png (top-1 vs extraction throughput)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "probe.md", "json": out / "probe.json", "png": out / "probe.png"}
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
    return paths
