"""nn.Modules only, one family per file, each registered with timm on import.

Importing this package registers every family (``import attnzoo`` does it for you). This package never imports ``zoo``.
PoolFormer and FocalNet are timm's own models; ``poolformer_official`` only adds the official v1 head order.
"""

if __name__ != "attnzoo.backbones":  # a clone's root on sys.path finds this folder as a top-level package: not ours to claim
    raise ImportError(f"'{__name__}' is a folder of an attnzoo clone, not a package of its own: import attnzoo.backbones")

# Importing a family module registers its variants with timm's registry.
from . import agent, biformer, flowformer, moh_transnext, poolformer_official, slab, transnext  # noqa: F401

__all__ = ["agent", "biformer", "flowformer", "moh_transnext", "poolformer_official", "slab", "transnext"]
