"""The one module that opens weight files: weights-only unpickling, safetensors, sha256, atomic writes.

Every other module reads and writes checkpoints through the functions here (docs/ARCHITECTURE.md, "one reader of
weight files"); ``tests/test_architecture.py`` checks that no other module calls ``torch.load``,
``safetensors.torch.load_file`` / ``safe_open`` or ``torch.save``.

``read_checkpoint`` never executes code from a file: ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` files are read with
``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, a data-only class that training scripts store under
``args``), and anything else the pickle asks for is refused before it is built. A caller that knows a file needs more
data-only classes (an mmengine Runner checkpoint's numpy arrays and history buffers) passes them as
``extra_globals``: they are allowed for that one read, never for the process. A trusted pickle can be turned into a
``.safetensors`` file once with ``zoo convert SRC DST --trust-pickle``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from tqdm.auto import tqdm

from ..errors import ZooError

__all__ = [
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "read_checkpoint",
    "read_safetensors",
    "save_pickle",
    "save_safetensors",
    "sha256_file",
    "verify_sha256",
]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
# Above this size hashing and converting show a progress bar.
LARGE_FILE_BYTES = 256 * 2**20
# Classes that hold plain data and are common in training checkpoints; allowed in every weights-only read.
DATA_ONLY_GLOBALS = [argparse.Namespace]


class CheckpointError(ZooError, RuntimeError):
    """A checkpoint that cannot be loaded safely or does not fit the model; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------------ hashing


def sha256_file(path: str | os.PathLike, progress: bool | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; a progress bar for files over 256 MiB (``progress=None``)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    show = size > LARGE_FILE_BYTES if progress is None else progress
    with path.open("rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                    disable=not show, leave=False) as bar:
        while chunk := f.read(2**20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, origin: str) -> str:
    """The file's sha256 when it starts with ``expected`` (a full digest, or a prefix of >= 8 hex digits as in torch
    hub file names); else CheckpointError naming both digests and ``origin`` (where the expected one comes from)."""
    path = Path(path)
    expected = expected.lower()
    actual = sha256_file(path)
    if len(expected) < 8 or not actual.startswith(expected):
        raise CheckpointError(
            f"{path}: sha256 mismatch: expected {expected} ({origin}), the file has {actual}. "
            "The file is corrupt, incomplete or not the published one; delete it and download it again."
        )
    return actual


# ------------------------------------------------------------------------------------------------------ reading


def _check_safetensors_layout(path: Path) -> None:
    """Catch truncated or corrupt .safetensors files with a message that says which, before the loader does."""
    size = path.stat().st_size
    fix = "download or convert it again"
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated .safetensors file: {size} bytes, not even its header; {fix}.")
        header_len = int.from_bytes(prefix, "little")
        if header_len > size - 8:
            raise CheckpointError(
                f"{path}: truncated or corrupt .safetensors file: its header claims {header_len} bytes, "
                f"the file holds {size - 8} after the length prefix; {fix}."
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: corrupt .safetensors file: unreadable header ({err}); {fix}.") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt .safetensors file: its header is not a table of tensors; {fix}.")
    try:
        data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: corrupt .safetensors file: malformed tensor entry ({err}); {fix}.") from err
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(
            f"{path}: truncated .safetensors file: {size} bytes, its header describes {expected}; {fix}."
        )


def read_safetensors(path: str | os.PathLike, device: str = "cpu",
                     keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (only ``keys`` when given), after checking that it is whole."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    _check_safetensors_layout(path)
    try:
        if keys is None:
            return safetensors.torch.load_file(str(path), device=str(device))
        with safetensors.safe_open(str(path), framework="pt", device=str(device)) as f:
            return {key: f.get_tensor(key) for key in keys if key in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt .safetensors file ({err}); download or convert it again.") from err


def _first_line(err: Exception) -> str:
    """The first line of an error's text, or its type when it has none (a 0-byte pickle's EOFError)."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def _refusal(path: Path, err: Exception) -> CheckpointError:
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) pickles cannot be listed without unpickling them
        needed = []
    what = f" ({', '.join(needed)})" if needed else f" ({_first_line(err)[:200]})"
    return CheckpointError(
        f"{path}: refused: the file is a pickle that needs Python code to rebuild{what}; nothing in it was "
        f"executed. If you trust its source, convert it once: `zoo convert {path} {path.with_suffix('.safetensors')} "
        "--trust-pickle`, then load the .safetensors file."
    )


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", trust_pickle: bool = False,
                    extra_globals: Sequence[Any] = ()) -> Any:
    """The raw object stored in a checkpoint file (a dict of tensors for .safetensors).

    Pickles are read weights-only, allowing ``extra_globals`` (classes, functions or ``(function, "module.name")``
    pairs, as ``torch.serialization.safe_globals`` takes them) for this read only; ``trust_pickle`` reads any pickle
    (for converting files you trust; it runs their code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    if path.suffix == ".safetensors":
        return read_safetensors(path, device=str(map_location))
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint format '{path.suffix}'; expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}."
        )
    try:
        if trust_pickle:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals([*DATA_ONLY_GLOBALS, *extra_globals]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise _refusal(path, err) from err
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err}); the file is corrupt.") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(err)}); the file is truncated or corrupt."
        ) from err


# ------------------------------------------------------------------------------------------------------ writing


def _atomic_write(path: Path, write) -> Path:
    """``write(tmp)`` into a hidden file next to ``path``, then rename it over ``path``: a reader never sees half a
    file, and a killed writer leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write a clean .safetensors file: CPU, contiguous, no shared storage (shared tensors are cloned), atomically.

    A progress bar runs over the tensors when they add up to more than 256 MiB (``progress=None``).
    """
    path = Path(path)
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    show = total > LARGE_FILE_BYTES if progress is None else progress
    seen_storages: set[tuple[int, int]] = set()
    clean: dict[str, torch.Tensor] = {}
    for key, tensor in tqdm(state_dict.items(), desc=f"cleaning {path.name}", unit="tensor", disable=not show):
        if tensor.is_meta:
            raise CheckpointError(f"{key}: a meta tensor has no data to save; materialise the model first.")
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        storage_id = (storage.data_ptr(), storage.nbytes())
        # safetensors stores each tensor once: a view, a slice of a bigger buffer or tied weights get their own copy.
        owns_storage = storage.nbytes() == tensor.numel() * tensor.element_size() and tensor.is_contiguous()
        if storage_id in seen_storages or not owns_storage:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        elif tensor.numel():
            seen_storages.add(storage_id)
        clean[key] = tensor
    meta = {"format": "pt", **(metadata or {})}
    return _atomic_write(path, lambda tmp: safetensors.torch.save_file(clean, tmp, metadata=meta))


def save_pickle(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` an object of tensors and plain data (a training state, an mmengine-style checkpoint) atomically;
    it reads back with :func:`read_checkpoint` (weights-only)."""
    return _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))
