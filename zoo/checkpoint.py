"""Safe checkpoint loading: safetensors or weights-only pickles, verified hashes, and errors that name every key.

``load_checkpoint`` never executes code from a file: ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` files are read with
``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, a data-only class that training scripts store under
``args``), and anything else the pickle asks for is refused before it is built. A trusted pickle can be turned into
a ``.safetensors`` file once with ``zoo convert SRC DST --trust-pickle``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tempfile
import urllib.error
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from tqdm.auto import tqdm

from .cards import Card, get_card, has_card

__all__ = [
    "CheckpointError",
    "LoadResult",
    "cached_download",
    "convert_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_safetensors",
    "sha256_file",
    "unwrap_state_dict",
]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
# Above this size hashing and converting show a progress bar.
LARGE_FILE_BYTES = 256 * 2**20
# Classes that hold plain data and are common in training checkpoints; allowed in weights-only loading.
DATA_ONLY_GLOBALS = [argparse.Namespace]
# Containers that training scripts wrap around the weights, in the order they are looked for.
WEIGHTS_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
EMA_KEYS = ("state_dict_ema", "model_ema")
_LISTED = 12  # keys named in an error before "... and N more"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely or does not fit the model; the message says why and what to do."""


@dataclass
class LoadResult:
    """What ``load_checkpoint`` did: the file, its sha256 (when checked) and the keys that did not fit."""

    path: Path
    sha256: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_shapes)


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


def _verify_sha256(path: Path, expected: str, origin: str) -> str:
    expected = expected.lower()
    actual = sha256_file(path)
    # A prefix (>= 8 hex digits, as in torch hub file names) is accepted as well as the full digest.
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


def _refusal(path: Path, err: Exception) -> CheckpointError:
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) pickles cannot be listed without unpickling them
        needed = []
    what = f" ({', '.join(needed)})" if needed else f" ({str(err).splitlines()[0][:200]})"
    return CheckpointError(
        f"{path}: refused: the file is a pickle that needs Python code to rebuild{what}; nothing in it was "
        f"executed. If you trust its source, convert it once: `zoo convert {path} {path.with_suffix('.safetensors')} "
        "--trust-pickle`, then load the .safetensors file."
    )


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """The raw object stored in a checkpoint file (a dict of tensors for .safetensors).

    Pickles are read weights-only unless ``trust_pickle`` (for converting files you trust; it runs their code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file.")
    if path.suffix == ".safetensors":
        _check_safetensors_layout(path)
        try:
            return safetensors.torch.load_file(str(path), device=str(map_location))
        except (safetensors.SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: corrupt .safetensors file ({err}); download or convert it again.") from err
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown checkpoint format '{path.suffix}'; expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}."
        )
    try:
        if trust_pickle:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(DATA_ONLY_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise _refusal(path, err) from err
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err}); the file is corrupt.") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({str(err).splitlines()[0]}); the file is truncated or corrupt."
        ) from err


def unwrap_state_dict(obj: Any, use_ema: bool = False, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: unwraps 'state_dict'/'model'/'state_dict_ema'/'model_ema' and 'module.' prefixes.

    With ``use_ema`` the EMA weights are taken and must exist; otherwise they are used only when nothing else is there.
    """
    if use_ema:
        if not (isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in EMA_KEYS)):
            found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{origin}: use_ema=True but it holds no EMA weights (top-level keys: {found}).")
        order = EMA_KEYS + WEIGHTS_KEYS
    else:
        order = WEIGHTS_KEYS
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in order if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{origin}: expected a dict of tensors, found {type(obj).__name__}.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin}: no tensors found (top-level keys: {sorted(map(str, obj))[:_LISTED]}).")
    # DataParallel / DistributedDataParallel / timm EMA wrappers prefix every key with 'module.'.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ------------------------------------------------------------------------------------------------------ fetching


def cached_download(url: str, progress: bool = True, filename: str | None = None) -> Path:
    """The local copy of ``url`` in the torch hub cache (``<hub dir>/checkpoints``), downloaded only if absent.

    Cached as ``filename``, or by default as the URL's base name (which must then name a file).
    """
    filename = filename or os.path.basename(urllib.parse.urlparse(url).path)
    if not os.path.splitext(filename)[1]:
        raise CheckpointError(
            f"{url}: the URL names no file ({filename!r}) to cache it as; pass filename=... (e.g. 'model.pth')."
        )
    destination = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if destination.is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(destination), progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CheckpointError(
            f"could not download {url} ({err}). Without network access, put the file at {destination} "
            "(or pass its local path)."
        ) from err
    return destination


def _resolve_source(path_or_card: str | os.PathLike | Card) -> tuple[Path, Card | None]:
    if isinstance(path_or_card, Card):
        card = path_or_card
    elif isinstance(path_or_card, str) and "://" in path_or_card:
        return cached_download(path_or_card), None
    elif Path(path_or_card).is_file():
        return Path(path_or_card), None
    elif isinstance(path_or_card, str) and has_card(path_or_card):
        card = get_card(path_or_card)
    else:
        raise CheckpointError(f"{path_or_card}: no such checkpoint file, and no model card of that name.")
    if not card.checkpoints:
        raise CheckpointError(f"model card '{card.name}' lists no checkpoint; pass a file path instead.")
    from .pretrained import cache_filename  # imports the registry (timm, backbones): only when a card is used

    url = card.checkpoints[0].url
    return cached_download(url, filename=cache_filename(card.name, url)), card


# ------------------------------------------------------------------------------------------------------ loading


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def compare_state_dicts(
    checkpoint: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """(missing, unexpected, mismatched (key, checkpoint shape, model shape)) of ``checkpoint`` against ``expected``."""
    missing = [k for k in expected if k not in checkpoint]
    unexpected = [k for k in checkpoint if k not in expected]
    mismatched = [  # in the model's order, which reads top-down like the architecture
        (k, tuple(checkpoint[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in checkpoint and tuple(checkpoint[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mismatched


def describe_misfit(origin: str, target: str, missing, unexpected, mismatched, strict: bool = True) -> str:
    """One message naming every kind of misfit between a checkpoint and a model."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
        shapes = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]
        parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(shapes)}")
    message = f"{origin} does not fit {target}: " + "; ".join(parts) + "."
    if mismatched:
        message += (
            " Tensors with the same names but other shapes mean the checkpoint was saved from another variant"
            " (or with other model arguments): build the variant it belongs to."
        )
    if strict:
        message += " Pass strict=False to load only the tensors that fit."
    return message


def load_checkpoint(
    model: torch.nn.Module,
    path_or_card: str | os.PathLike | Card,
    *,
    strict: bool = True,
    filter_fn: str | Callable | None = "auto",
    map_location: Any = "cpu",
    expected_sha256: str | None = None,
    use_ema: bool = False,
) -> LoadResult:
    """Load weights into ``model`` safely and say exactly what did not fit.

    ``path_or_card``: a .safetensors/.pth/.pt/.bin file, an http(s)/file URL, or a model card name (its first
    checkpoint, fetched into the torch hub cache if not there yet). The sha256 is verified when the caller
    (``expected_sha256``, full digest or a prefix of >= 8 hex digits) or the card knows it. Training containers and
    'module.' prefixes are unwrapped, then the family's ``checkpoint_filter_fn`` maps official layouts to ours
    (``filter_fn="auto"``; pass a callable ``fn(state_dict, model)`` or None to skip). Missing/unexpected keys and
    shape mismatches raise CheckpointError naming them; with ``strict=False`` the tensors that fit are loaded, the
    rest reported in a warning and in the returned LoadResult.
    """
    from .registry import checkpoint_filter_fn_for  # registry imports timm and backbones; keep this module light

    path, card = _resolve_source(path_or_card)
    result = LoadResult(path=path)
    if expected_sha256:
        result.sha256 = _verify_sha256(path, expected_sha256, "given by the caller")
    elif card is not None and card.checkpoints[0].sha256:
        result.sha256 = _verify_sha256(path, card.checkpoints[0].sha256, f"model card '{card.name}'")

    origin = f"checkpoint {path}" + (f" (card '{card.name}')" if card else "")
    state_dict = unwrap_state_dict(read_checkpoint(path, map_location), use_ema=use_ema, origin=origin)
    if filter_fn == "auto":
        filter_fn = checkpoint_filter_fn_for(model)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)

    target = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    missing, unexpected, mismatched = compare_state_dicts(state_dict, model.state_dict())
    result.missing_keys, result.unexpected_keys, result.mismatched_shapes = missing, unexpected, mismatched
    if not result.fits:
        message = describe_misfit(origin, target, missing, unexpected, mismatched, strict=strict)
        if strict:
            raise CheckpointError(message)
        warnings.warn(message + " (strict=False: loaded the tensors that fit; the rest keep their values.)", stacklevel=2)
        skip = {k for k, _, _ in mismatched}
        state_dict = {k: v for k, v in state_dict.items() if k not in skip}
    model.load_state_dict(state_dict, strict=strict)
    return result


# ------------------------------------------------------------------------------------------------------ writing


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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        safetensors.torch.save_file(clean, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model_name: str | None = None,
    *,
    trust_pickle: bool = False,
    use_ema: bool = False,
) -> str:
    """Write ``src``'s weights as a cleaned .safetensors ``dst`` and return its sha256.

    With ``model_name`` the family's checkpoint_filter_fn converts official layouts to the timm model's, and the
    result must fit that model exactly (checked on the meta device, no weights built). ``trust_pickle=True`` reads a
    pickle that needs code (it runs that code: only for files you trust).
    """
    import timm

    from .registry import checkpoint_filter_fn_for, require_model

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the converted file must end in .safetensors.")
    state_dict = unwrap_state_dict(read_checkpoint(src, trust_pickle=trust_pickle), use_ema=use_ema, origin=str(src))
    metadata = {"source": src.name}
    if model_name is not None:
        require_model(model_name)
        kwargs = get_card(model_name).model_kwargs if has_card(model_name) else {}
        with torch.device("meta"):
            model = timm.create_model(model_name, **kwargs)
        filter_fn = checkpoint_filter_fn_for(model)
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, model)
        misfit = compare_state_dicts(state_dict, model.state_dict())
        if any(misfit):
            raise CheckpointError(describe_misfit(f"checkpoint {src}", model_name, *misfit, strict=False))
        metadata["architecture"] = model_name
    save_safetensors(state_dict, dst, metadata=metadata)
    return sha256_file(dst)
