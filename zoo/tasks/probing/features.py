"""Frozen features for probing: the token map of a backbone, extracted once over an ImageFolder split.

The token map is what ``forward_features`` returns, read the way timm's models give it:
- batch x tokens x channels (a ViT): the first ``num_prefix_tokens`` are the class / register tokens; the patch
  tokens are the rest; the pooled vector is the class token when there is one, else the mean patch token;
- a 4-d map (a hierarchical model's last stage), NCHW or NHWC (told apart by which axis holds ``num_features``
  channels): flattened to batch x (H*W) x channels; the pooled vector is the mean token.
Anything else (a vector, a list of maps) is not a token map: :class:`ProbeError` names the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import ZooError

__all__ = ["FLOAT16_MAX", "Features", "ProbeError", "compact_tokens", "extract_features", "largest_magnitude",
           "token_map"]

FLOAT16_MAX = 65504.0


class ProbeError(ZooError):
    """A ``zoo probe`` input that cannot be probed (a model without a token map, classes that differ, ...)."""


@dataclass
class Features:
    """One split's frozen features: ``tokens`` (N x T x C, float16 when it holds them exactly enough, else float32),
    ``pooled`` (N x C float32), ``labels`` (N int64), and the seconds the extraction took."""

    tokens: np.ndarray
    pooled: np.ndarray
    labels: np.ndarray
    seconds: float = 0.0

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])


def token_map(model: torch.nn.Module, output: torch.Tensor, name: str = "model") -> tuple[torch.Tensor, torch.Tensor]:
    """(patch tokens B x T x C, pooled B x C) of ``forward_features``' ``output``; :class:`ProbeError` if it is none."""
    channels = getattr(model, "num_features", None)
    if not torch.is_tensor(output) or output.ndim not in (3, 4):
        shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ProbeError(f"{name}: forward_features gives {shape}, not a token map (batch x tokens x channels, or a "
                         "batch x channels x H x W feature map); probe a backbone that keeps its spatial tokens.")
    if output.ndim == 3:
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        if output.shape[1] <= prefix:
            raise ProbeError(f"{name}: forward_features gives {tuple(output.shape)}: only its {prefix} class/register "
                             "token(s), no patch tokens to probe.")
        tokens = output[:, prefix:]
        pooled = output[:, 0] if prefix else tokens.mean(dim=1)
        return tokens, pooled
    if output.shape[1] == channels and output.shape[-1] != channels:
        tokens = output.flatten(2).transpose(1, 2)  # NCHW
    elif output.shape[-1] == channels or channels is None and output.shape[1] != output.shape[-1]:
        tokens = output.flatten(1, 2)  # NHWC (or, without num_features, channels last by default)
    else:
        raise ProbeError(f"{name}: forward_features gives {tuple(output.shape)} and num_features is {channels}: "
                         "cannot tell which axis holds the channels.")
    return tokens, tokens.mean(dim=1)


def largest_magnitude(tokens: np.ndarray) -> float:
    """The largest |value| of ``tokens`` (0 for none)."""
    return float(np.abs(tokens).max()) if tokens.size else 0.0


def compact_tokens(tokens: np.ndarray, largest: float | None = None) -> np.ndarray:
    """float16 when every value fits it (halves the cache), else float32. ``largest``: the largest |value| of the
    whole split when ``tokens`` is one shard of it (so every shard takes the type the whole split takes)."""
    if largest is None:
        largest = largest_magnitude(tokens)
    return tokens.astype(np.float32 if largest >= FLOAT16_MAX else np.float16, copy=False)


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device, *, name: str = "model",
                     desc: str = "extract", progress: bool = True, compact: bool = True) -> Features:
    """Run the frozen ``model`` over ``loader`` (eval mode, no grad) and keep its token map, pooled vector, labels.
    ``compact=False`` keeps the tokens float32 (a shard, compacted once the whole split's largest value is known)."""
    model.eval()
    tokens, pooled, labels = [], [], []
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
        t, p = token_map(model, model.forward_features(images.to(device)), name)
        tokens.append(t.float().cpu().numpy())
        pooled.append(p.float().cpu().numpy())
        labels.append(targets.cpu().numpy().astype(np.int64))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if not labels:
        raise ProbeError(f"{name}: the split has no images to extract.")
    tokens = np.concatenate(tokens)
    return Features(compact_tokens(tokens) if compact else tokens, np.concatenate(pooled), np.concatenate(labels),
                    seconds)
