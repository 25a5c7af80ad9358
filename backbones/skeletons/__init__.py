"""Architectures shared by several attention families: PVT, Swin, CSWin and DeiT.

Agent attention and SLAB descend from the same official PVT / Swin / CSWin / DeiT code with the same state-dict
layout; they differ only in their attention and their norms. Each skeleton here holds one architecture (blocks,
stages, embeddings, the model class with ``feature_info`` / ``forward_intermediates``) and takes what differs as
constructor parameters, as timm's ``vision_transformer.py`` takes ``block_fn``:

- ``block_fn(stage=..., index=..., dim=..., ...)`` builds each block; the family picks the attention per block (by its
  ``attn_type`` letters) and hands it to the skeleton's block class as ``attn_layer`` (a callable of ``dim``).
- ``norm_layer`` (and, where the official families differ, ``embed_norm_layer``) builds the norms.

These modules import no family file: the arrows point from ``backbones/<family>.py`` to here, never back.
"""

from . import cswin, deit, pvt, swin  # noqa: F401

__all__ = ["cswin", "deit", "pvt", "swin"]
