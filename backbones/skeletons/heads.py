"""The timm classifier API (``get_classifier`` / ``reset_classifier``) written once for every model here.

The skeletons (PVT, Swin, CSWin, DeiT) and the families with models of their own (BiFormer, Flowformer) keep the
same attributes: ``head`` (a ``Linear`` over ``num_features`` channels, or ``Identity`` without classes),
``num_classes`` and ``global_pool``. What differs between them is a class attribute, not a copy of the methods.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ClassifierHead"]


class ClassifierHead:
    """Mixin: ``get_classifier`` and ``reset_classifier`` over ``head``, ``num_classes``, ``global_pool`` and
    ``num_features`` (the classifier's input width; ``prune_intermediate_layers`` may lower it).

    ``global_pools``: the ``global_pool`` values ``reset_classifier`` accepts (``None``: any value, unchecked).
    """

    global_pools: tuple[str, ...] | None = None

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if self.global_pools is not None and global_pool not in self.global_pools:
                choices = " or ".join(repr(p) for p in self.global_pools)
                raise ValueError(f"global_pool must be {choices}, got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
