"""Training the probes on cached features, and the k-NN classifier; each returns top-1 / top-5 on val.

Recipes (the official defaults, scaled to the data size):
- ``linear`` (MAE ``main_linprobe.py``) and ``ep`` (billpsomas/efficient-probing README): LARS (momentum 0.9, trust
  coefficient 0.001, no weight decay; BatchNorm / bias parameters not scaled), 90 epochs, 10 of them linear warm-up,
  then cosine to 0, at the official run's lr: base lr 0.1 x 4096 / 256 = 1.6.
- ``attentive`` (V-JEPA's attentive probe, as the EP repository runs it): the same LARS schedule as EP, so the two
  attentive probes differ only in the pooling.
- ``mp`` (mingzeG/Moment-Probing ``train_mp.sh``): AdamW, weight decay 0.05, 30 epochs, 5 of them warm-up, then
  cosine, at lr 1e-3.
- ``knn`` (the EP repository's / DINO's weighted k-NN): L2-normalised pooled vectors, the 20 nearest training
  images vote with weight exp(cosine / 0.07); nothing is trained.
Scaling to the data: the batch is the official one (LARS 4096, MP 256) capped at a tenth of the training images (at
least 16), so a small folder still takes about ten steps an epoch. The lr is not scaled down with the batch: LARS
rescales every matrix's step to its weights' norm (the trust ratio), so the official run's lr keeps the official
relative step, where the linear rule would shrink it 100-fold at a batch of 40 and leave the probe at chance after
a few hundred steps. MP's official 1e-4 is tuned for ~150k ImageNet steps; at the few hundred steps of a small folder
it leaves MP near chance (digits, 480 training scans, 30 epochs: 26% top-1 at 1.9e-4, 62% at 1e-3), so MP takes 1e-3.
``epochs`` overrides every recipe's epoch count (warm-up kept at the same fraction). Every probe is seeded, and its
top-1 / top-5 are the final epoch's (the EP repository reports its best epoch on val, which flatters).
:func:`recipe_record` is the recipe a probe trained with, stated with its rule; the leaderboard records it per row
(probe.json) and prints it under the table (:func:`recipe_lines`).

Why not MAE's linear scaling rule (lr = base lr x batch / 256), measured (digits, 320 training scans, random-weight
agent_deit_tiny at 32 px, 30 epochs, batch 32, this 2-core CPU): linear 36.3 -> 22.5 % top-1, ep 67.5 -> 10.0 %
(chance), attentive 81.2 -> 32.5 %, mp (1e-3 x 32 / 256) 51.2 -> 15.0 %. The rule keeps the progress of an epoch
when only the batch changes; on a small folder there are also ~100 times fewer images, so an epoch takes ~100
times fewer steps, and shrinking each step by the batch ratio on top leaves the probe where it started.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from attnzoo.heads.probing import build_probe, count_parameters

from .features import Features

__all__ = ["BATCH_RULE", "LARS", "LR_RULE", "LR_RULES", "METHODS", "ProbeResult", "Recipe", "knn_classify",
           "recipe_for", "recipe_lines", "recipe_record", "torch_threads", "train_probe"]

METHODS = ("linear", "attentive", "ep", "mp", "knn")


class LARS(torch.optim.Optimizer):
    """LARS as MAE's / EP's linear probing uses it: for matrices, the update (gradient + weight decay) is rescaled to
    ``trust_coefficient * |w| / |update|``; vectors (norms, biases) take the plain update; then SGD momentum."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((p_norm > 0) & (u_norm > 0), group["trust_coefficient"] * p_norm / u_norm,
                                        torch.ones_like(p_norm))
                    update = update * ratio
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "lars" or "adamw"
    lr: float
    weight_decay: float
    epochs: int
    warmup_epochs: int
    batch_size: int  # the official batch; capped by the data size
    official_lr: float | None = None  # where ``lr`` is not the official one


RECIPES = {
    "linear": Recipe("lars", 0.1 * 4096 / 256, 0.0, 90, 10, 4096),
    "attentive": Recipe("lars", 0.1 * 4096 / 256, 0.0, 90, 10, 4096),
    "ep": Recipe("lars", 0.1 * 4096 / 256, 0.0, 90, 10, 4096),
    "mp": Recipe("adamw", 1e-3, 0.05, 30, 5, 256, official_lr=1e-4),
}


def recipe_for(method: str, num_train: int, epochs: int | None = None) -> tuple[Recipe, int, float, int, int]:
    """(the official recipe, and the batch, lr, epochs and warm-up epochs used for ``num_train`` images)."""
    recipe = RECIPES[method]
    batch = max(1, min(recipe.batch_size, max(16, num_train // 10), num_train))
    total = epochs or recipe.epochs
    warmup = round(recipe.warmup_epochs * total / recipe.epochs)
    return recipe, batch, recipe.lr, total, warmup


BATCH_RULE = "the official batch capped at a tenth of the training images, at least 16 (at most all of them)"
LR_RULE = "not scaled with the batch"
LR_RULES = {"lars": "the official run's lr, not scaled with the batch (LARS's trust ratio makes each step relative "
                    "to the weights)",
            "adamw": "1e-3 instead of MP's official 1e-4 (tuned for ~150k ImageNet steps), not scaled with the batch"}


def recipe_record(method: str, num_train: int, epochs: int | None = None, batch_size: int | None = None) -> dict:
    """The recipe ``method`` trains with on ``num_train`` images (``epochs``: --epochs; ``batch_size``: a batch given
    instead of the rule's), with the official values and the rules that scaled them; {} for k-NN."""
    if method not in RECIPES:
        return {}
    recipe, batch, lr, total, warmup = recipe_for(method, num_train, epochs)
    return {"optimizer": recipe.optimizer, "lr": lr, "official_lr": recipe.official_lr or recipe.lr,
            "lr_rule": LR_RULES[recipe.optimizer],
            "weight_decay": recipe.weight_decay, "batch_size": batch_size or batch,
            "official_batch_size": recipe.batch_size, "batch_rule": "given" if batch_size else BATCH_RULE,
            "epochs": total, "warmup_epochs": warmup, "official_epochs": recipe.epochs,
            "official_warmup_epochs": recipe.warmup_epochs, "train_images": num_train}


def recipe_lines(records: dict[str, dict]) -> list[str]:
    """One line per distinct recipe of ``records`` (method -> :func:`recipe_record`), the methods sharing it named."""
    shared: dict[str, list[str]] = {}
    for method, r in records.items():
        if r:
            official = "official" if r["official_lr"] == r["lr"] else f"official {r['official_lr']:g}"
            text = (f"{r['optimizer'].upper() if r['optimizer'] == 'lars' else 'AdamW'}, lr {r['lr']:g} ({official}), "
                    f"weight decay {r['weight_decay']:g}, batch {r['batch_size']} (official {r['official_batch_size']}"
                    f"), {r['epochs']} epochs ({r['warmup_epochs']} warm-up; official {r['official_epochs']} / "
                    f"{r['official_warmup_epochs']})")
            shared.setdefault(text, []).append(method)
    return [f"- {', '.join(methods)}: {text}" for text, methods in shared.items()]


@dataclass
class ProbeResult:
    method: str
    top1: float
    top5: float
    params: int
    seconds: float
    epochs: int = 0
    batch_size: int = 0
    lr: float = 0.0
    recipe: dict = field(default_factory=dict)  # recipe_record (k-NN: {})


def _lr_at(step: float, total: float, warmup: float, lr: float) -> float:
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1e-9)))


def _topk(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    correct = top.eq(labels[:, None])
    return 100.0 * correct[:, :1].any(1).float().mean().item(), 100.0 * correct.any(1).float().mean().item()


def _tensors(features: Features, with_tokens: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(tokens float32 or None, pooled float32, labels) of a split as torch tensors, converted once."""
    tokens = torch.from_numpy(np.array(features.tokens)).float() if with_tokens else None  # np.array: a writable copy
    pooled = torch.from_numpy(np.array(features.pooled)).float()
    return tokens, pooled, torch.from_numpy(np.array(features.labels))


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` inside the block (None: unchanged). Probes are small: on a shared
    CPU one thread trains them many times faster than several that wait for each other."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_probe(method: str, train: Features, val: Features, num_classes: int, *, seed: int = 0,
                epochs: int | None = None, device: torch.device | str = "cpu", batch_size: int | None = None,
                threads: int | None = None, probe_kwargs: dict | None = None) -> ProbeResult:
    """Train the probe ``method`` on ``train`` (seeded) and score it on ``val``; ``knn`` trains nothing.
    ``probe_kwargs`` go to the probe's constructor (e.g. MP's ``hidden_dim``); ``threads``: torch's CPU threads."""
    with torch_threads(threads):
        return _train_probe(method, train, val, num_classes, seed=seed, epochs=epochs, device=torch.device(device),
                            batch_size=batch_size, probe_kwargs=probe_kwargs or {})


def _train_probe(method: str, train: Features, val: Features, num_classes: int, *, seed: int, epochs: int | None,
                 device: torch.device, batch_size: int | None, probe_kwargs: dict) -> ProbeResult:
    start = time.perf_counter()
    if method == "knn":
        top1, top5 = knn_classify(train, val, num_classes, device=device)
        return ProbeResult("knn", top1, top5, 0, time.perf_counter() - start)
    record = recipe_record(method, train.num_images, epochs, batch_size)  # what it trains with is what it records
    batch, lr, total_epochs, warmup = (record[k] for k in ("batch_size", "lr", "epochs", "warmup_epochs"))
    torch.manual_seed(seed)
    probe = build_probe(method, int(train.tokens.shape[-1]), num_classes, **probe_kwargs).to(device)
    if record["optimizer"] == "lars":
        optimizer = LARS(probe.parameters(), lr=lr, weight_decay=record["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=record["weight_decay"])
    with_tokens = method != "linear"  # the linear probe reads the pooled vector only
    tokens, pooled, labels = _tensors(train, with_tokens)
    generator = torch.Generator().manual_seed(seed)
    n = train.num_images
    steps_per_epoch = max(1, n // batch)  # the last partial batch dropped (BatchNorm needs more than one sample)
    for epoch in range(total_epochs):
        probe.train()
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch:(step + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(epoch + step / steps_per_epoch, total_epochs, warmup, lr)
            batch_tokens = tokens[index].to(device) if with_tokens else pooled[index, None].to(device)
            logits = probe(batch_tokens, pooled[index].to(device))
            loss = F.cross_entropy(logits, labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    probe.eval()
    tokens, pooled, labels = _tensors(val, with_tokens)
    logits = []
    with torch.no_grad():
        for first in range(0, val.num_images, 256):
            part = slice(first, first + 256)
            batch_tokens = tokens[part] if with_tokens else pooled[part, None]
            logits.append(probe(batch_tokens.to(device), pooled[part].to(device)).float().cpu())
    top1, top5 = _topk(torch.cat(logits), labels)
    return ProbeResult(method, top1, top5, count_parameters(probe), time.perf_counter() - start, total_epochs, batch,
                       lr, record)


@torch.no_grad()
def knn_classify(train: Features, val: Features, num_classes: int, k: int = 20, temperature: float = 0.07,
                 device: torch.device | str = "cpu") -> tuple[float, float]:
    """DINO's weighted k-NN on the L2-normalised pooled vectors (top-1, top-5 in percent)."""
    bank = F.normalize(torch.as_tensor(np.array(train.pooled), dtype=torch.float32, device=device), dim=1)
    bank_labels = torch.as_tensor(np.array(train.labels), device=device)
    queries = F.normalize(torch.as_tensor(np.array(val.pooled), dtype=torch.float32, device=device), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for first in range(0, queries.shape[0], 1024):
        similarity, index = (queries[first:first + 1024] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(similarity.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_labels[index], (similarity / temperature).exp())
        scores.append(votes.cpu())
    return _topk(torch.cat(scores), torch.as_tensor(np.array(val.labels)))
