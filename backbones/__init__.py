"""nn.Modules only, one family per file, each registered with timm on import.

Importing this package registers every family (``import zoo`` does it for you). This package never imports ``zoo``.
PoolFormer and FocalNet are timm's own models; ``poolformer_official`` only adds the official v1 head order.
"""

# Importing a family module registers its variants with timm's registry.
from . import agent, biformer, flowformer, moh_transnext, poolformer_official, slab, transnext  # noqa: F401

__all__ = ["agent", "biformer", "flowformer", "moh_transnext", "poolformer_official", "slab", "transnext"]
