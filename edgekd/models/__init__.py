"""Model builders (plain functions) and checkpoint loading."""

from edgekd.models.builders import build, count_macs, count_params, load_model, save_model

__all__ = ["build", "count_macs", "count_params", "load_model", "save_model"]
