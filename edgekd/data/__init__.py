"""Datasets: the built-in digits, image folders and .npz files, split deterministically."""

from edgekd.data.loading import Splits, data_key, load

__all__ = ["Splits", "data_key", "load"]
