"""``zoo configs [PATTERN]``: the configs the zoo ships, one absolute path per line: OpenMMLab configs (``.py``) and
Ultralytics model YAMLs (``yolo/*.yaml``, for ``attnzoo.integrations.ultralytics``).

Installed from a wheel they live under ``zoo/.mim/configs``; in a clone they are the repository's ``configs/``
(see ``attnzoo.shipped``). The printed paths are what ``tools/train.py``, mmdet's inferencers and ``zoo xray detect``
take; ``zoo xray detect`` also accepts the short name (``xray/<file>.py``) or a model card's name.
"""

from __future__ import annotations

import argparse

from ..errors import UserError


def run(args: argparse.Namespace) -> int:
    from ..shipped import configs_dir, list_configs

    names = list_configs(args.pattern)
    if not names:
        raise UserError(f"no shipped config matches '{args.pattern}' (`zoo configs` lists them all)")
    root = configs_dir()
    for name in names:
        print(root / name)
    return 0


def register(commands) -> None:
    configs = commands.add_parser("configs", help="paths of the configs the zoo ships: OpenMMLab .py, Ultralytics .yaml (installed or clone)")
    configs.add_argument("pattern", nargs="?", default="*",
                         help="shell-style pattern on the path below the configs folder, e.g. 'xray/*'")
    configs.set_defaults(run=run)
