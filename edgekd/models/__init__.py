"""Models: the registry that builds any spec (registry), edgekd's own families and the input
adapter (builders), model files (checkpoints)."""

from edgekd.models.builders import Classifier, count_macs, count_params
from edgekd.models.checkpoints import HeadMismatch, ModelError, load_model, save_model
from edgekd.models.registry import build, describe

__all__ = ["Classifier", "HeadMismatch", "ModelError", "build", "count_macs", "count_params",
           "describe", "load_model", "save_model"]
