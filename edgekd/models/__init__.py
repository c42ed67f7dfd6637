"""Models: the registry that builds any spec (registry), edgekd's own families and the input
adapter (builders), a user's model files (checkpoints), edgekd's own (saved)."""

from edgekd.models.builders import Classifier, count_macs, count_params
from edgekd.models.checkpoints import HeadMismatch, ModelError, Untrusted
from edgekd.models.registry import build, describe
from edgekd.models.saved import load_model, save_model

__all__ = ["Classifier", "HeadMismatch", "ModelError", "build", "count_macs", "count_params",
           "Untrusted", "describe", "load_model", "save_model"]
