"""mmengine Runner checkpoints under the zoo's one reader: ``torch.load(weights_only=True)`` with exactly the extra
globals a Runner checkpoint needs, allowed for that read only.

mmengine 0.10.7 reads local checkpoints (``load_from``, ``--resume``, ``tools/test.py``, mmdet's inferencers,
``init_cfg=dict(type='Pretrained')``) through ``CheckpointLoader``'s local-file scheme, which calls ``torch.load``
without ``weights_only`` (torch >= 2.6 treats that as ``weights_only=True`` and refuses numpy arrays and mmengine's
``HistoryBuffer``). :func:`install_runner_checkpoint_reader` replaces that scheme with
``attnzoo.weights.read_checkpoint(path, extra_globals=RUNNER_CHECKPOINT_GLOBALS)``: weights-only stays on, the extra
globals apply inside that one read, and ``attnzoo.load_checkpoint`` elsewhere in the process still refuses them.
"""

from __future__ import annotations

import os

import numpy as np

from ..legacy import upgrade_config_text
from ..weights.files import RefusedGlobal, read_checkpoint

__all__ = ["RUNNER_CHECKPOINT_GLOBALS", "install_runner_checkpoint_reader", "load_from_zoo_reader"]


def _history_buffer_method(owner, name: str):
    """Stands in for ``builtins.getattr`` while torch.load(weights_only=True) unpickles a Runner checkpoint.

    ``HistoryBuffer.__getstate__`` stores its statistics methods (``HistoryBuffer.min``, ...) by reference, which
    pickle writes as ``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself would let a checkpoint reach any
    attribute of any allowed object, so only this one lookup is honoured.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise RefusedGlobal(f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer's statistics "
                        f"methods {sorted(_HISTORY_BUFFER_METHODS)} are allowed")


_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})


def _runner_checkpoint_globals() -> list:
    """The classes and functions a Runner checkpoint pickles besides tensors and plain containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints of the configs in configs/:
    ``message_hub`` holds ``HistoryBuffer`` objects (numpy arrays, and their statistics methods through
    ``getattr``, see :func:`_history_buffer_method`); ``runtime_info`` holds numpy scalars.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    allowed = [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, (_history_buffer_method, "builtins.getattr")]
    # numpy >= 1.25 rebuilds a dtype as an instance of its class (numpy.dtypes.Float64DType, ...): the dtypes that
    # logged values and counts take (harmless data types).
    dtype_classes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(dtype_classes, name):
            allowed.append(getattr(dtype_classes, name))
    return allowed


RUNNER_CHECKPOINT_GLOBALS = _runner_checkpoint_globals()


def load_from_zoo_reader(filename: str, map_location=None):
    """mmengine's local-file checkpoint loader, through the zoo's reader with the Runner's globals (mmengine logs
    it as the "zoo_reader backend": it names a loader by what follows `load_from_`)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    checkpoint = read_checkpoint(filename, map_location=map_location, extra_globals=RUNNER_CHECKPOINT_GLOBALS)
    # A checkpoint saved by attnzoo 0.1 carries config text naming zoo.openmmlab / heads.* (in meta and in the message
    # hub's runtime info): mmengine's inferencers build the model from that text when given weights alone.
    if isinstance(checkpoint, dict):
        runtime_info = (checkpoint.get("message_hub") or {}).get("runtime_info") if isinstance(
            checkpoint.get("message_hub"), dict) else None
        for holder in (checkpoint.get("meta"), runtime_info):
            if isinstance(holder, dict) and isinstance(holder.get("cfg"), str):
                holder["cfg"] = upgrade_config_text(holder["cfg"])
    return checkpoint


def install_runner_checkpoint_reader() -> None:
    """Make mmengine read local checkpoint files with :func:`load_from_zoo_reader`; idempotent."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_zoo_reader, force=True)
