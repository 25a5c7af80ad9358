"""The weights room: reading, verifying, downloading, caching and writing checkpoint files (docs/ARCHITECTURE.md).

- ``files``: the one module that unpickles (weights-only) or opens safetensors, hashes and writes files atomically;
- ``download``: the torch hub cache, one file per checkpoint;
- ``state_dicts``: the one unwrapping rule (``model`` / ``state_dict``; the EMA only when asked) and the one misfit
  message;
- ``filters``: each family's official-layout converter;
- ``loading``: :func:`load_checkpoint`, the one loader, and the loader behind timm's ``pretrained=True``.
"""

from .download import cache_filename, cached_download
from .files import (
    PICKLE_SUFFIXES,
    CheckpointError,
    atomic_write,
    read_checkpoint,
    read_safetensors,
    save_pickle,
    save_safetensors,
    sha256_file,
    verify_sha256,
)
from .filters import checkpoint_filter_fn_for
from .loading import LoadResult, check_fit, load_checkpoint, load_pretrained_file, prepare_state_dict, read_state_dict
from .state_dicts import Misfit, adapt_to_model, compare_state_dicts, describe_misfit, unwrap_state_dict

__all__ = [
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "LoadResult",
    "Misfit",
    "adapt_to_model",
    "atomic_write",
    "cache_filename",
    "cached_download",
    "check_fit",
    "checkpoint_filter_fn_for",
    "compare_state_dicts",
    "describe_misfit",
    "load_checkpoint",
    "load_pretrained_file",
    "prepare_state_dict",
    "read_checkpoint",
    "read_safetensors",
    "read_state_dict",
    "save_pickle",
    "save_safetensors",
    "sha256_file",
    "unwrap_state_dict",
    "verify_sha256",
]
