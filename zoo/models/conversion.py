"""``zoo convert``: a checkpoint rewritten as a clean .safetensors file, optionally checked against a model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..weights import (
    CheckpointError,
    check_fit,
    prepare_state_dict,
    read_checkpoint,
    save_safetensors,
    sha256_file,
    unwrap_state_dict,
)
from .builder import build_model
from .registry import require_model

__all__ = ["convert_checkpoint"]


def convert_checkpoint(src, dst, model_name: str | None = None, *, trust_pickle: bool = False,
                       use_ema: bool = False) -> str:
    """Write ``src``'s weights as a cleaned .safetensors ``dst`` and return its sha256.

    With a detector card's name, the card's ``key_mapping`` converts (and checks) the official layout. With another
    ``model_name`` the family's checkpoint_filter_fn converts official layouts to the timm model's (built with
    its card's model_kwargs), and the result must fit that model exactly (checked on the meta device, no weights
    built). ``trust_pickle=True`` reads a pickle that needs code (it runs that code: only for files you trust).
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the converted file must end in .safetensors.")
    state_dict = unwrap_state_dict(read_checkpoint(src, trust_pickle=trust_pickle), use_ema=use_ema, origin=str(src))
    metadata = {"source": src.name}
    mapping = _detector_key_mapping(model_name)
    if mapping is not None:  # a detector card: its key mapping converts (and checks) the official layout
        try:
            state_dict = mapping(state_dict)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{src}: {err}") from err
        metadata["architecture"] = model_name
    elif model_name is not None:
        require_model(model_name)
        with torch.device("meta"):
            model = build_model(model_name)
        state_dict = prepare_state_dict(state_dict, model)
        check_fit(state_dict, model, f"checkpoint {src}", strict=True, fix="")
        metadata["architecture"] = model_name
    save_safetensors(state_dict, dst, metadata=metadata)
    return sha256_file(dst)


def _detector_key_mapping(name: str | None):
    """The key-mapping function a detector card names (``detector.key_mapping``), else None."""
    from ..cards import get_card, has_card

    if name is None or not has_card(name):
        return None
    section = get_card(name).detector
    if section is None or not section.key_mapping:
        return None
    import importlib

    module, _, function = section.key_mapping.rpartition(".")
    return getattr(importlib.import_module(module), function)
