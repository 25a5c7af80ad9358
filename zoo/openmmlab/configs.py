"""OpenMMLab configs read by the zoo's entry points: a config saved by attnzoo 0.1 keeps working.

mmengine imports a config's ``custom_imports`` while it reads the file; a config written before the one import root
names ``zoo.openmmlab`` / ``heads.xray`` / ``heads.detection``, which no longer exist (:mod:`attnzoo.legacy`).
:func:`read_config` reads the file without importing them, moves those names to attnzoo, then imports them as
mmengine would. ``tools/train.py``, ``tools/test.py`` and ``zoo xray detect`` read configs through it; mmengine
checkpoints' own config text is upgraded by the zoo's checkpoint reader (:mod:`attnzoo.openmmlab.checkpoints`).
"""

from __future__ import annotations

from ..legacy import upgrade_custom_imports

__all__ = ["read_config"]


def read_config(path: str):
    """``mmengine.config.Config.fromfile(path)`` with ``custom_imports`` of attnzoo 0.1 moved to attnzoo first."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(str(path), import_custom_modules=False)
    custom = cfg.get("custom_imports")
    if custom and custom.get("imports"):
        custom["imports"] = upgrade_custom_imports(custom["imports"])
        import_modules_from_strings(**custom)
    return cfg
