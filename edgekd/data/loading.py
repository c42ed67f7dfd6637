"""Load samples as float32 NCHW in [0, 1] with integer labels, and split them.

The split is stratified and fixed by the pipeline's seed, so every stage and every rerun sees
the same train / val / test samples. Normalisation statistics come from the train split only;
they are recorded with the model (edgekd.models.Normalize) and applied inside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.config import DataConfig
from edgekd.files import atomic_path, sha256_file
from edgekd.schema import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
Samples = tuple[np.ndarray, np.ndarray, list[str]]  # x, y, class names


@dataclass
class Splits:
    """Train / val / test arrays (x float32 NCHW in [0, 1], y int64) and what describes them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one sample."""
        return tuple(self.x_train.shape[1:])

    def meta(self) -> dict:
        """What a model needs to know about its inputs: shape, classes and normalisation."""
        mean = self.x_train.mean(axis=(0, 2, 3))
        std = self.x_train.std(axis=(0, 2, 3)) + 1e-6
        return {"input_shape": list(self.input_shape), "num_classes": len(self.classes),
                "in_channels": self.input_shape[0], "classes": self.classes,
                "mean": mean.astype(float).tolist(), "std": std.astype(float).tolist(),
                "input_range": [0.0, 1.0], "layout": "NCHW"}


def _digits() -> Samples:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, bunch.target.astype(np.int64), [str(c) for c in range(10)]


def _npz(path: Path) -> Samples:
    try:
        blob = np.load(path)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: cannot read as .npz ({exc})"]) from None
    missing = [k for k in ("x", "y") if k not in blob.files]
    if missing:
        raise ConfigError([f"{path}: .npz is missing array(s) {', '.join(missing)} "
                           f"(has {', '.join(blob.files) or 'none'})"])
    x, y = blob["x"], blob["y"].astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ConfigError([f"{path}: x has {len(x)} samples but y has {len(y)}"])
    x = x.astype(np.float32) / (255.0 if np.issubdtype(blob["x"].dtype, np.integer) else 1.0)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.ndim != 4:
        raise ConfigError([f"{path}: x must be N x H x W or N x C x H x W, got shape {x.shape}"])
    classes = [str(c) for c in blob["classes"]] if "classes" in blob.files else \
        [str(c) for c in range(int(y.max()) + 1)]
    return np.ascontiguousarray(x), y, classes


def _folder(path: Path, size: tuple[int, int], channels: int) -> Samples:
    from PIL import Image

    if not path.is_dir():
        raise ConfigError([f"{path}: image folder not found"])
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ConfigError([f"{path}: needs one subfolder per class (found {len(classes)})"])
    xs, ys = [], []
    mode = "L" if channels == 1 else "RGB"
    for label, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as img:
                img = img.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError([f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found"])
    return np.stack(xs), np.array(ys, dtype=np.int64), classes


def _stratified_split(y: np.ndarray, val: float, test: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    train, val_idx, test_idx = [], [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test, n_val = round(len(idx) * test), round(len(idx) * val)
        test_idx.append(idx[:n_test])
        val_idx.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val_idx, test_idx))


def load(cfg: DataConfig, seed: int) -> Splits:
    """Read the configured data and split it (stratified, seeded)."""
    if cfg.source == "digits":
        x, y, classes = _digits()
    elif cfg.source == "npz":
        x, y, classes = _npz(cfg.path)
    else:
        x, y, classes = _folder(cfg.path, cfg.image_size, cfg.channels or 3)
    if cfg.image_size is not None and cfg.source == "npz" and x.shape[2:] != tuple(cfg.image_size):
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(x), size=tuple(cfg.image_size), mode="bilinear",
                          align_corners=False).numpy()
    train, val, test = _stratified_split(y, cfg.split.val, cfg.split.test, seed)
    return Splits(x[train], y[train], x[val], y[val], x[test], y[test], classes)


def data_key(cfg: DataConfig, seed: int) -> str:
    """A hash naming this data and split: config, seed and the content of the input file."""
    h = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), seed], sort_keys=True).encode())
    if cfg.path is not None and cfg.path.is_file():
        h.update(sha256_file(cfg.path).encode())
    elif cfg.path is not None and cfg.path.is_dir():
        for file in sorted(cfg.path.rglob("*")):
            if file.is_file():
                h.update(str(file.relative_to(cfg.path)).encode())
                h.update(str(file.stat().st_size).encode())
                h.update(str(file.stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]



def calibration_samples(splits: Splits, seed: int, count: int) -> np.ndarray:
    """A fixed, seeded subset of `count` training inputs (all of them if fewer), in their
    original order: the post-training calibration set. N x C x H x W float32."""
    x = splits.x_train
    rng = np.random.default_rng(seed)
    count = min(count, len(x))
    return x[np.sort(rng.choice(len(x), size=count, replace=False))]


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Write arrays `x` and `y` as an uncompressed .npz, atomically (runtimes and devices read
    the test split this way)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, x=x, y=y)
    return path
