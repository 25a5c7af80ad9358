"""The models room: which models the zoo offers, the one builder, hub folders and checkpoint conversion."""

from .builder import LOCAL_DIR_PREFIX, build_model, card_of, model_kwargs_for
from .conversion import convert_checkpoint
from .folders import CONFIG_NAME, README_NAME, WEIGHTS_NAME, save_pretrained
from .registry import family_of, list_models, require_model

__all__ = [
    "CONFIG_NAME",
    "LOCAL_DIR_PREFIX",
    "README_NAME",
    "WEIGHTS_NAME",
    "build_model",
    "card_of",
    "convert_checkpoint",
    "family_of",
    "list_models",
    "model_kwargs_for",
    "require_model",
    "save_pretrained",
]
