"""``zoo convert``: a checkpoint rewritten as a clean .safetensors file, optionally checked against a model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..outputs import output_file, writing
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

    With a detector card's name (an X-ray or detection card), the card's ``key_mapping`` converts the official
    layout, and the result must fit the detector the card's config builds exactly (built on the meta device: no
    weights, no download; the zoo's one misfit message): weights of another architecture are refused. With another
    ``model_name`` the family's checkpoint_filter_fn converts official layouts to the timm model's (built with
    its card's model_kwargs), and the result must fit that model exactly (checked on the meta device, no weights
    built). ``trust_pickle=True`` reads a pickle that needs code (it runs that code: only for files you trust).
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the converted file must end in .safetensors.")
    output_file(dst, "DST", inputs=[src])  # the one output-path rule (attnzoo.outputs), before reading anything
    state_dict = unwrap_state_dict(read_checkpoint(src, trust_pickle=trust_pickle), use_ema=use_ema, origin=str(src))
    metadata = {"source": src.name}
    detector = _detector_section(model_name)
    if detector is not None:  # a detector card: its key mapping converts the official layout; then the fit
        mapping = _detector_key_mapping(model_name)
        if mapping is not None:
            try:
                state_dict = mapping(state_dict)
            except (KeyError, ValueError) as err:
                raise CheckpointError(f"{src}: {err}") from err
        _check_detector_fit(model_name, detector, state_dict, src)
        metadata["architecture"] = model_name
    elif model_name is not None:
        require_model(model_name)
        with torch.device("meta"):
            model = build_model(model_name)
        state_dict = prepare_state_dict(state_dict, model)
        check_fit(state_dict, model, f"checkpoint {src}", strict=True, fix="")
        metadata["architecture"] = model_name
    with writing(dst, "DST"):
        save_safetensors(state_dict, dst, metadata=metadata)
    return sha256_file(dst)


def _detector_section(name: str | None):
    """A detector card's ``detector`` section, else None."""
    from ..cards import get_card, has_card

    if name is None or not has_card(name):
        return None
    return get_card(name).detector


def _check_detector_fit(name: str, detector, state_dict: dict, src: Path) -> None:
    """``state_dict`` fits the detector of the card's config exactly (keys and shapes), or one CheckpointError with the
    zoo's misfit message. The detector is built on the meta device (no memory, no backbone weights read)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from ..weights import compare_state_dicts, describe_misfit

    config = Config.fromfile(str(detector.config_file))  # its custom_imports register the zoo's mm parts
    backbone = config.model.get("backbone") or {}
    if "pretrained" in backbone:
        backbone["pretrained"] = None  # the architecture only: no backbone weights
    init_default_scope(config.get("default_scope", "mmdet"))
    registry = __import__(f"{config.get('default_scope', 'mmdet')}.registry", fromlist=["MODELS"]).MODELS
    with torch.device("meta"):
        model = registry.build(config.model)
    misfit = compare_state_dicts(state_dict, model.state_dict())
    if not misfit.fits:
        raise CheckpointError(describe_misfit(
            f"checkpoint {src}", f"{name} ({detector.config})", misfit,
            fix=f"pass the card of the architecture these weights belong to (`zoo list --task {_task(name)}`), or "
                "convert without --model"))


def _task(name: str) -> str:
    from ..cards import get_card

    return get_card(name).task


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
