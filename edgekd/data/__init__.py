"""Datasets: the built-in digits, image folders, manifests and .npz files, given split or split
here deterministically, read on demand (edgekd.data.stream serves them as DataLoaders)."""

from edgekd.data.loading import (
    Part,
    Splits,
    calibration_samples,
    data_key,
    from_arrays,
    load,
    save_npz,
)

__all__ = ["Part", "Splits", "calibration_samples", "data_key", "from_arrays", "load",
           "save_npz"]
