"""OpenMMLab glue: any zoo or timm model as an mmdet / mmseg backbone, the attentions as mmcv plug-ins, and Runner
checkpoints read by the zoo's one reader.

Only configs (``custom_imports=dict(imports=['attnzoo.openmmlab'])``), ``tools/train.py`` / ``tools/test.py`` and the X-ray
task import this package; ``import attnzoo`` never does, so the zoo works without mmdet / mmseg installed.

What importing it does:

* registers :class:`~attnzoo.openmmlab.backbone.ZooBackbone` in mmdet's and mmseg's ``MODELS`` (whichever is installed);
* registers the :mod:`attnzoo.layers` attentions as mmcv plug-ins under their class names (``BiLevelRoutingAttention2d``,
  ``AgentAttention2d``, ``FlowAttention2d``, ``SimplifiedLinearAttention2d``: ``x + gamma * layer(x)`` with ``gamma``
  starting at 0; ``ELA``: the gate itself), so ``plugins=[dict(cfg=dict(type='BiLevelRoutingAttention2d'),
  stages=(False, True, True, True), position='after_conv2')]`` builds in mmdet's and mmseg's ResNets
  (:mod:`~attnzoo.openmmlab.plugins`);
* makes mmengine read local checkpoint files through ``attnzoo.weights.read_checkpoint`` with exactly the extra globals a
  Runner checkpoint holds, for those reads only (:mod:`~attnzoo.openmmlab.checkpoints`): ``--resume``, ``load_from``,
  ``tools/test.py`` and mmdet's inferencers work with ``weights_only`` on, and nothing else in the process is
  allowed more;
* makes mmengine's default logger now, its console handler following ``sys.stdout`` at each write instead of holding
  the stream of the moment it was made (:mod:`~attnzoo.openmmlab.logs`): a caller's redirected or captured stream,
  closed later, never receives another message.
"""

from __future__ import annotations

import attnzoo  # noqa: F401  (registers every zoo family with timm)

from .backbone import PRETRAINED_ADAPTERS, ZooBackbone
from .checkpoints import RUNNER_CHECKPOINT_GLOBALS, install_runner_checkpoint_reader, load_from_zoo_reader
from .logs import follow_standard_streams, make_default_logger
from .plugins import PLUGIN_LAYERS

__all__ = [
    "PLUGIN_LAYERS",
    "PRETRAINED_ADAPTERS",
    "RUNNER_CHECKPOINT_GLOBALS",
    "ZooBackbone",
    "follow_standard_streams",
    "install_runner_checkpoint_reader",
    "load_from_zoo_reader",
]


def _register() -> None:
    # mmcv's build_plugin_layer looks plug-ins up in the current scope's MODELS and then its parents, so the root
    # registry serves mmdet and mmseg configs alike.
    from mmengine.registry import MODELS as ROOT_MODELS

    for name, plugin in PLUGIN_LAYERS.items():
        ROOT_MODELS.register_module(name, module=plugin, force=True)

    registered = False
    errors = []
    for package in ("mmdet", "mmseg"):
        try:
            registry = __import__(f"{package}.registry", fromlist=["MODELS"]).MODELS
        except ImportError as err:  # e.g. mmcv-lite (no compiled ops) cannot import mmdet/mmseg
            errors.append(f"{package}: {err}")
            continue
        registry.register_module("ZooBackbone", module=ZooBackbone, force=True)
        registered = True
    if not registered:
        raise ImportError("attnzoo.openmmlab needs mmdet and/or mmsegmentation with full mmcv (not mmcv-lite): "
                          "`pip install 'attnzoo[mm]'` (see tools/install.sh). " + "; ".join(errors))
    install_runner_checkpoint_reader()
    make_default_logger()


_register()
