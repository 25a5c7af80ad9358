"""The released weights of the forgery heads, read through ``attnzoo.weights`` (downloads; not used in tests).

* :func:`load_official_univfd`: CLIP ViT-L/14 (open_clip 'openai') + UniversalFakeDetect's ``fc_weights.pth``
  (sha256 checked for the published file);
* :func:`load_official_npr`: NPR-DeepfakeDetection's ``NPR.pth``;
* :func:`load_official_fakereasoning`: the paper's FakeReasoning, its projectors and fusion read from the released
  shards (:func:`read_official_fakereasoning_state`).

``attnzoo.heads.forgery`` builds the models and takes state dicts; the files are read here: pickles weights-only
(``read_checkpoint``), unwrapped by the one rule (``unwrap_state_dict``), URLs cached in the torch hub cache
(``cached_download``), safetensors shards checked whole (``read_safetensors``). A file that does not fit raises
``CheckpointError`` with ``describe_misfit``'s message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ...weights import (
    CheckpointError,
    cached_download,
    compare_state_dicts,
    describe_misfit,
    read_checkpoint,
    read_safetensors,
    unwrap_state_dict,
    verify_sha256,
)

__all__ = [
    "load_official_fakereasoning",
    "load_official_npr",
    "load_official_univfd",
    "official_state_dict",
    "read_official_fakereasoning_state",
]


def official_state_dict(path_or_url: str | os.PathLike, expected_sha256: str | None = None,
                        what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a released checkpoint (a local file or a URL, downloaded once into the torch hub cache),
    with its sha256 checked when ``expected_sha256`` is given; and the origin its messages name."""
    path = cached_download(str(path_or_url)) if "://" in str(path_or_url) else Path(path_or_url)
    if expected_sha256:
        verify_sha256(path, expected_sha256, f"the published {what}")
    origin = f"{what} {path}"
    return unwrap_state_dict(read_checkpoint(path), origin=origin), origin


def _check(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], origin: str, target: str,
           fix: str = "Pass the file the head was published with.", allowed: str = "", allow_missing=None) -> None:
    """CheckpointError with the one misfit message unless ``state`` fits ``expected`` (beyond ``allow_missing``)."""
    misfit = compare_state_dicts(state, expected).without(allow_missing=allow_missing)
    if not misfit.fits:
        raise CheckpointError(describe_misfit(origin, target, misfit, allowed=allowed, fix=fix))


def load_official_univfd(fc_weights: str | os.PathLike | None = None, name: str = "ViT-L-14",
                         pretrained: str = "openai"):
    """UnivFD as published: CLIP ``name`` (open_clip ``pretrained`` weights) and the official linear layer,
    ``fc_weights`` (a local ``fc_weights.pth`` or a URL; default the published file, whose sha256 is checked)."""
    from attnzoo.heads.forgery.baselines import UNIVFD_FC_SHA256, UNIVFD_FC_URL, UnivFD

    source = fc_weights if fc_weights is not None else UNIVFD_FC_URL
    expected = UNIVFD_FC_SHA256 if str(source) == UNIVFD_FC_URL else None
    state, origin = official_state_dict(source, expected, "UnivFD fc weights")
    model = UnivFD.from_pretrained(name, pretrained)
    _check(state, model.fc.state_dict(), origin, f"the UnivFD linear layer on {name} (embedding "
           f"{model.fc.in_features})", fix="The official layer needs CLIP ViT-L/14 (768-d embeddings).")
    model.load_official_fc(state)
    return model


def load_official_npr(path_or_url: str | os.PathLike | None = None, model=None):
    """NPR with the official ``NPR.pth`` (a local file or a URL; default the published ForenSynths-trained file),
    loaded strictly into ``model`` (a new NPR by default)."""
    from attnzoo.heads.forgery.baselines import NPR, NPR_URL
    from attnzoo.heads.forgery.baselines import load_official_npr as load_npr_state

    state, origin = official_state_dict(path_or_url if path_or_url is not None else NPR_URL, what="NPR weights")
    model = model or NPR()
    _check(state, model.state_dict(), origin, "NPR")
    return load_npr_state(state, model)


def _official_folder(model_path: str) -> Path:
    folder = Path(model_path)
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_path, allow_patterns=["*.safetensors", "*.json"]))


def read_official_fakereasoning_state(model_path: str | None = None) -> dict[str, torch.Tensor]:
    """The released projectors and fusion (the official keys ``model.mm_projector.*``, ``model.dino_mm_projector.*``,
    ``model.crossattention.*``) from the safetensors shards of ``model_path`` (a folder, or a Hub id downloaded into
    the Hub cache; default the paper's). With the shards' index only those tensors are read."""
    from attnzoo.heads.forgery.mllm import OFFICIAL_LM, OFFICIAL_TRAINED_PREFIXES

    folder = _official_folder(model_path or OFFICIAL_LM)
    index = folder / "model.safetensors.index.json"
    state: dict[str, torch.Tensor] = {}
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index} is unreadable ({error}); download the checkpoint again") from error
        shards: dict[str, list[str]] = {}
        for key, shard in weight_map.items():
            if key.startswith(OFFICIAL_TRAINED_PREFIXES):
                shards.setdefault(shard, []).append(key)
        for shard, keys in sorted(shards.items()):
            state.update(read_safetensors(folder / shard, keys=keys))
    else:
        for shard in sorted(folder.glob("*.safetensors")):
            state.update({k: v for k, v in read_safetensors(shard).items() if k.startswith(OFFICIAL_TRAINED_PREFIXES)})
    if not state:
        raise CheckpointError(f"{folder}: no {' / '.join(p.rstrip('.') for p in OFFICIAL_TRAINED_PREFIXES)} tensors "
                              "in its .safetensors files: not a FakeReasoning checkpoint")
    return state


def load_official_fakereasoning(model_path: str | None = None, device: str = "cpu",
                                dtype: torch.dtype = torch.float16):
    """The paper's FakeReasoning (``attnzoo.heads.forgery.mllm.build_official_fakereasoning``: branches, LM and tokenizer
    from ``model_path``, default the released one) with the released projectors and fusion, every one of which must
    fit (the LM and the frozen CLIP / DINOv2 branches load from their own releases)."""
    from attnzoo.heads.forgery.mllm import (
        OFFICIAL_LM,
        TRAINED_VISUAL_PREFIXES,
        build_official_fakereasoning,
        convert_official_fakereasoning_state_dict,
        load_official_fakereasoning_weights,
    )

    model_path = model_path or OFFICIAL_LM
    state = read_official_fakereasoning_state(model_path)
    model = build_official_fakereasoning(model_path, device="cpu", dtype=dtype)
    _check(convert_official_fakereasoning_state_dict(state), model.state_dict(),
           f"FakeReasoning checkpoint {model_path}", "the paper's FakeReasoning",
           allowed="the LM and the frozen branches, which load from their own releases",
           allow_missing=lambda key: not key.startswith(TRAINED_VISUAL_PREFIXES))
    return load_official_fakereasoning_weights(model, state).to(device=device, dtype=dtype).eval()
