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
import contextlib
import hashlib
import json
import os
import pickle
import re
import stat
import sys
import tempfile
import zipfile
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
    "RefusedGlobal",
    "atomic_write",
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


class RefusedGlobal(pickle.UnpicklingError):
    """Raised by an allowed stand-in (an ``extra_globals`` function) when the pickle asks it for more than it grants,
    e.g. mmengine's ``getattr`` on anything but HistoryBuffer's statistics: the file asks for code."""


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


def _check_safetensors_layout(path: Path, fix: str | None = None) -> None:
    """Catch truncated or corrupt .safetensors files with a message that says which, before the loader does."""
    size = path.stat().st_size
    fix = fix or "download or convert it again"
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


def read_safetensors(path: str | os.PathLike, device: str = "cpu", keys: Sequence[str] | None = None,
                     fix: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (only ``keys`` when given), after checking that it is whole; ``fix``
    replaces the advice of the error for a file that is not (see :func:`read_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    kind, head = _sniff(path)
    if kind in ("zip", "torch-pickle"):
        advice = fix or f"rename it to {path.with_suffix('.pth').name} (it is then read weights-only)"
        raise CheckpointError(f"{path}: a PyTorch pickle checkpoint named .safetensors, not a .safetensors file; "
                              f"{advice}.")
    plainly_not = _not_a_checkpoint(path, kind, head, fix) if kind in ("text", "html", "git-lfs", "gzip") else None
    if plainly_not is not None:
        raise plainly_not
    _check_safetensors_layout(path, fix)
    try:
        if keys is None:
            return safetensors.torch.load_file(str(path), device=str(device))
        with safetensors.safe_open(str(path), framework="pt", device=str(device)) as f:
            return {key: f.get_tensor(key) for key in keys if key in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt .safetensors file ({err}); {fix or 'download or convert it again'}.") from err


def _first_line(err: BaseException) -> str:
    """The first line of an error's text, or its type when it has none (a 0-byte pickle's EOFError)."""
    return (str(err).splitlines() or [type(err).__name__])[0]


# What a file is, judged from its first bytes (never by unpickling it): the reader's messages say what each bad file
# is, and only a pickle that asks for code is told about --trust-pickle.
_SNIFF_BYTES = 1024
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's older (non-zip) format starts with a pickle of this number; its LONG1 payload is the same in any
# pickle protocol.
_LEGACY_MAGIC = torch.serialization.MAGIC_NUMBER.to_bytes(10, "little", signed=True)


def _sniff(path: Path) -> tuple[str, bytes]:
    """(kind, first bytes): kind is empty, zip, torch-pickle, pickle, safetensors, gzip, html, git-lfs, text or data."""
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "empty", head
    if head.startswith(_ZIP_MAGIC):
        return "zip", head
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        return ("torch-pickle" if _LEGACY_MAGIC in head[:32] else "pickle"), head
    if head.startswith(b"\x1f\x8b"):
        return "gzip", head
    header_len = int.from_bytes(head[:8], "little")
    if len(head) > 8 and head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8:
        return "safetensors", head
    if b"\0" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as err:
            text = head[:err.start].decode("utf-8") if err.start > len(head) - 4 else None  # a cut last character
        if text is not None:
            lowered = text.lstrip().lower()
            if lowered.startswith("version https://git-lfs"):
                return "git-lfs", head
            if lowered.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body")):
                return "html", head
            return "text", head
    return "data", head


def _text_start(head: bytes) -> str:
    line = head.decode("utf-8", errors="replace").strip().splitlines()[0] if head.strip() else ""
    return repr(line[:60] + ("..." if len(line) > 60 else ""))


def _not_a_checkpoint(path: Path, kind: str, head: bytes, fix: str | None) -> CheckpointError | None:
    """The error for a file that is plainly not a pickled checkpoint (decided before any reading), else None."""
    size = path.stat().st_size
    says = {
        "empty": ("not a readable PyTorch checkpoint: the file is empty (0 bytes), so truncated or corrupt: a download, "
                  "copy or save that was interrupted", "get the file again (download, copy or save it anew)"),
        "text": (f"not a PyTorch checkpoint but a text file ({size} bytes, beginning {_text_start(head)})",
                 "pass the checkpoint file itself"),
        "html": (f"not a PyTorch checkpoint but a web page ({size} bytes of HTML): a download that saved a login or "
                 "error page instead of the file", "check the URL and download the file again"),
        "git-lfs": ("not a PyTorch checkpoint but a Git LFS pointer to one",
                    "fetch the file itself (`git lfs pull` in its repository)"),
        "gzip": ("not a PyTorch checkpoint but a gzip-compressed file", "decompress it (gunzip) and pass the result"),
        "safetensors": (f"a .safetensors file named '{path.suffix}', not a pickle",
                        f"rename it to {path.with_suffix('.safetensors').name} and pass that"),
    }
    if kind not in says:
        return None
    what, advice = says[kind]
    return CheckpointError(f"{path}: {what}; {fix or advice}.")


def _unsafe_globals(err: BaseException) -> list[str]:
    """The ``module.name`` globals a weights-only read refused, from its error (and the error it re-raised)."""
    text = f"{err}\n{err.__context__ or ''}"
    return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text)))


def _exists(qualified: str) -> bool | None:
    """Whether ``module.name`` names something in an imported module: False for a name that cannot be (a pickle cut
    inside a name), None when its module is not imported (nothing is imported to find out: that would run code)."""
    module, _, name = qualified.rpartition(".")
    if module not in sys.modules:
        return None
    target: Any = sys.modules[module]
    for part in name.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True


def _refusal(path: Path, err: BaseException, fix: str | None = None, allowed: Sequence[str] = ()) -> CheckpointError:
    """The error for a pickle that asks for code (the code named, when it can be listed without unpickling)."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) pickles cannot be listed without unpickling them: the error names one
        needed = _unsafe_globals(err)
    needed = [name for name in needed if name not in allowed]
    what = f" ({', '.join(needed)})" if needed else f" ({_reason(err)})"
    advice = fix or (f"If you trust its source, convert it once: `zoo convert {path} "
                     f"{path.with_suffix('.safetensors')} --trust-pickle`, then load the .safetensors file")
    return CheckpointError(
        f"{path}: refused: the file is a pickle that needs Python code to rebuild{what}; nothing in it was "
        f"executed. {advice}."
    )


def _reason(err: BaseException) -> str:
    """What went wrong, in one line: a weights-only failure's own cause rather than torch's advice around it."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip() or str(err.__context__ or "")
    return (_first_line(Exception(text)) if text.strip() else type(err).__name__)[:200]


def _unreadable(path: Path, kind: str, head: bytes, err: BaseException, fix: str | None) -> CheckpointError:
    """The error for a file ``torch.load`` failed on that asks for no code: what the file is and how it is broken."""
    size = path.stat().st_size
    again = fix or "get the file again (download, copy or save it anew)"
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                damaged = archive.testzip()
        except zipfile.BadZipFile:
            return CheckpointError(
                f"{path}: not a readable PyTorch checkpoint: the file is truncated or corrupt (PyTorch's zip format, "
                f"but no end-of-archive record in its {size} bytes: it was cut short); {again}."
            )
        except Exception as zip_err:  # a member that does not decompress
            return CheckpointError(f"{path}: not a readable PyTorch checkpoint: the file is truncated or corrupt (a "
                                   f"damaged zip archive: {_first_line(zip_err)[:200]}); {again}.")
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return CheckpointError(f"{path}: not a PyTorch checkpoint: a zip archive without PyTorch's data.pkl (it "
                                   f"holds {shown or 'nothing'}); {fix or 'pass a file written by torch.save'}.")
        detail = f"the damaged member {damaged}" if damaged else _reason(err)
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint: the file is truncated or corrupt "
                               f"({detail}); {again}.")
    if kind == "torch-pickle":
        cut = [name for name in _unsafe_globals(err) if _exists(name) is False]
        detail = f"it breaks off inside the name {cut[0]!r}" if cut else _reason(err)
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint: the file is truncated or corrupt "
                               f"(PyTorch's older pickle format, cut short or damaged: {detail}); {again}.")
    if kind == "pickle":
        return CheckpointError(f"{path}: not a PyTorch checkpoint: a Python pickle that torch.save did not write (it "
                               f"lacks PyTorch's header); {fix or 'save the weights with torch.save or as .safetensors'}.")
    return CheckpointError(f"{path}: not a PyTorch checkpoint: neither PyTorch's zip format nor its pickle format "
                           f"(its first bytes: {head[:8].hex(' ')}); "
                           f"{fix or 'pass a file written by torch.save, or a .safetensors file'}.")


def _allowed_names(extra_globals: Sequence[Any]) -> set[str]:
    names = set()
    for item in [*DATA_ONLY_GLOBALS, *extra_globals]:
        if isinstance(item, tuple):
            names.add(item[1])
        else:
            names.add(f"{getattr(item, '__module__', '')}.{getattr(item, '__qualname__', '')}")
    return names


def _asks_for_code(path: Path, kind: str, err: BaseException, allowed: set[str]) -> bool:
    """Whether a weights-only read failed because the pickle asks for code (not because the file is damaged: a
    pickle cut inside a global's name asks for a name nothing has)."""
    cause: BaseException | None = err
    while cause is not None:  # torch wraps what an allowed stand-in raised
        if isinstance(cause, RefusedGlobal):
            return True
        cause = cause.__cause__ or cause.__context__
    listed: list[str] = []
    if kind == "zip":
        try:
            listed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # a damaged archive
            listed = []
    named = [name for name in _unsafe_globals(err) if _exists(name) is not False]
    return any(name not in allowed for name in [*listed, *named])


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", trust_pickle: bool = False,
                    extra_globals: Sequence[Any] = (), fix: str | None = None) -> Any:
    """The raw object stored in a checkpoint file (a dict of tensors for .safetensors).

    Pickles are read weights-only, allowing ``extra_globals`` (classes, functions or ``(function, "module.name")``
    pairs, as ``torch.serialization.safe_globals`` takes them) for this read only; ``trust_pickle`` reads any pickle
    (for converting files you trust; it runs their code).

    A file that cannot be read raises :class:`CheckpointError` saying what the file is (empty, a text file or web
    page, truncated, not a PyTorch file at all, a pickle that asks for code) and what to do; ``fix`` replaces that
    advice where the caller knows better (a run's resume state cannot be converted, only replaced).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    if path.suffix == ".safetensors":
        return read_safetensors(path, device=str(map_location), fix=fix)
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint format '{path.suffix}'; expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}."
        )
    kind, head = _sniff(path)
    plainly_not = _not_a_checkpoint(path, kind, head, fix)
    if plainly_not is not None:
        raise plainly_not
    allowed = _allowed_names(extra_globals)
    try:
        if trust_pickle:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals([*DATA_ONLY_GLOBALS, *extra_globals]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle and _asks_for_code(path, kind, err, allowed):
            raise _refusal(path, err, fix, allowed) from err
        raise _unreadable(path, kind, head, err, fix) from err
    except (ImportError, AttributeError) as err:
        if not trust_pickle:
            raise
        raise CheckpointError(
            f"{path}: the pickle needs code that is not importable here ({_first_line(err)[:200]}); convert it where "
            "the program that wrote it is installed."
        ) from err
    except Exception as err:  # what else torch.load raises on a damaged file: EOFError, RuntimeError, OSError, ...
        raise _unreadable(path, kind, head, err, fix) from err


# ------------------------------------------------------------------------------------------------------ writing


def atomic_write(path: Path, write) -> Path:
    """``write(tmp)`` into a hidden file next to ``path`` (``.<name>.<random>``), flushed to disk, then renamed over
    ``path``: a reader never sees half a file, and a killed writer leaves the previous file as it was (plus, at worst,
    the hidden temporary file, which a run folder cleans on its next start).

    The file gets the mode a plain ``open(path, "w")`` would give it: an existing file's mode, else ``0o666`` less the
    umask (``mkstemp`` alone would leave 0600, unlike every other file of the folder).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = None
        try:  # Linux tells the umask without changing it
            with open("/proc/self/status", encoding="ascii") as f:
                umask = next((int(line.split()[1], 8) for line in f if line.startswith("Umask:")), None)
        except (OSError, ValueError):
            pass
        if umask is None:
            umask = os.umask(0o022)
            os.umask(umask)
        mode = 0o666 & ~umask
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename durable too (some file systems cannot sync a folder)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(clean, tmp, metadata=meta))


def save_pickle(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` an object of tensors and plain data (a training state, an mmengine-style checkpoint) atomically;
    it reads back with :func:`read_checkpoint` (weights-only)."""
    return atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))
