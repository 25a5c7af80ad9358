"""The models room: which models the zoo offers, the one builder, hub folders and checkpoint conversion."""

from .arguments import ModelArgumentError, check_model_kwargs, parse_kwarg_value
from .builder import LOCAL_DIR_PREFIX, build_model, card_of, model_kwargs_for
from .conversion import convert_checkpoint
from .folders import CONFIG_NAME, README_NAME, WEIGHTS_NAME, save_pretrained
from .registry import family_of, list_models, require_model

__all__ = [
    "CONFIG_NAME",
    "LOCAL_DIR_PREFIX",
    "ModelArgumentError",
    "README_NAME",
    "WEIGHTS_NAME",
    "build_model",
    "card_of",
    "check_model_kwargs",
    "convert_checkpoint",
    "family_of",
    "list_models",
    "model_kwargs_for",
    "parse_kwarg_value",
    "require_model",
    "save_pretrained",
]
