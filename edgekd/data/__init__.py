"""Datasets: the built-in digits, image folders and .npz files, split deterministically."""

from edgekd.data.loading import Splits, calibration_samples, data_key, load, save_npz

__all__ = ["Splits", "calibration_samples", "data_key", "load", "save_npz"]
