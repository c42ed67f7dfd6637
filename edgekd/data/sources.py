"""Readers: each turns one data location into a `Store` of images, its labels and class names.

A store reads images on demand, so nothing holds a dataset in memory that does not already
live there: image files are decoded when a batch asks for them (uint8), an uncompressed .npz
is memory-mapped, and only the built-in digits (1,797 images of 8x8) are an array in memory.
"""

from __future__ import annotations

import csv
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.schema import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}


class ArrayStore:
    """Images in an array (in memory or memory-mapped), N x C x H x W or N x H x W x C.

    uint8 arrays are served as uint8, other integer arrays as float32 / 255, float arrays as
    float32 (taken to be in [0, 1]). With `size`, images are resized (bilinear) when read."""

    in_memory = True

    def __init__(self, x: np.ndarray, nhwc: bool = False, size: tuple[int, int] | None = None):
        self.x, self.nhwc = x, nhwc
        c, h, w = (x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape[1:]
        self.size = tuple(size) if size is not None and tuple(size) != (h, w) else None
        self.shape = (c, *(self.size or (h, w)))

    def __len__(self) -> int:
        return len(self.x)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images `rows` (int array) as n x C x H x W, uint8 or float32."""
        x = self.x[np.asarray(rows)]
        if self.nhwc:
            x = x.transpose(0, 3, 1, 2)
        if x.dtype != np.uint8:
            scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
            x = x.astype(np.float32) / scale if scale != 1.0 else x.astype(np.float32)
        if self.size is not None:
            import torch
            import torch.nn.functional as F

            resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)).float(),
                                    size=self.size, mode="bilinear", align_corners=False)
            x = resized.round().clamp(0, 255).to(torch.uint8).numpy() if x.dtype == np.uint8 \
                else resized.numpy()
        return np.ascontiguousarray(x)


class FileStore:
    """Image files, decoded (PIL) and resized to `size` (bilinear) when read, as uint8."""

    in_memory = False

    def __init__(self, files: list[Path], size: tuple[int, int], channels: int):
        self.files, self.size, self.mode = files, tuple(size), "L" if channels == 1 else "RGB"
        self.shape = (channels, *self.size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images `rows` as n x C x H x W uint8. Raises ConfigError naming an unreadable file."""
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        for i, row in enumerate(np.asarray(rows)):
            file = self.files[row]
            try:
                with Image.open(file) as img:
                    img = _eight_bit(img).convert(self.mode)
                    if img.size != (self.size[1], self.size[0]):
                        img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
            except Image.DecompressionBombError as exc:
                raise ConfigError([f"{file}: refused, too many pixels for an image ({exc}); "
                                   f"resize it before training"]) from None
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise ConfigError([f"{file}: cannot read as an image ({exc})"]) from None
            out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return out


def _eight_bit(img):
    """A 16-bit (or 32-bit integer) greyscale PIL image as 8-bit "L", scaled by its bit depth
    (65535 -> 255). PIL's own convert("L") clips such values at 255: an all-white image."""
    from PIL import Image

    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    wide = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(wide / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")


@dataclass
class Samples:
    """One data location read: its store, labels (int64, one per image) and class names."""

    store: ArrayStore | FileStore
    y: np.ndarray
    classes: list[str]
    named: bool = True
    """False when the class names are only the label numbers (an .npz without `classes`):
    a split may then lack the highest classes without being a different class set."""


def digits(size: tuple[int, int] | None = None) -> Samples:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), float32 in [0, 1];
    resized (bilinear) to `size` (height, width) when given."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return Samples(ArrayStore(x, size=size), bunch.target.astype(np.int64),
                   [str(c) for c in range(10)])


def npz(path: Path, size: tuple[int, int] | None) -> Samples:
    """An .npz with `x` (N x H x W, N x C x H x W or N x H x W x C) and `y` (N,) and optionally
    `classes`. `x` is memory-mapped when the archive stores it uncompressed (np.savez), read
    whole otherwise (np.savez_compressed)."""
    try:
        blob = np.load(path, allow_pickle=False)
        names = blob.files
        missing = [k for k in ("x", "y") if k not in names]
        if missing:
            raise ConfigError([f"{path}: .npz is missing array(s) {', '.join(missing)} "
                               f"(has {', '.join(names) or 'none'})"])
        y = blob["y"].reshape(-1)
        classes = [str(c) for c in blob["classes"]] if "classes" in names else None
        x = _mapped(path, "x.npy")
        x = blob["x"] if x is None else x
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError([f"{path}: cannot read as .npz ({exc})"]) from None
    if len(x) != len(y):
        raise ConfigError([f"{path}: x has {len(x)} samples but y has {len(y)}"])
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ConfigError([f"{path}: x must be N x H x W or N x C x H x W, got shape {x.shape}"])
    nhwc = x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)
    y = _labels(path, y, classes)
    _check_pixels(path, x)
    named = classes is not None
    if classes is None:
        classes = [str(c) for c in range(int(y.max()) + 1)]
    return Samples(ArrayStore(x, nhwc, size), y, classes, named)


def _labels(path: Path, y: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """`y` as int64 class indices; ConfigError naming the file and what is wrong (with
    counts): no samples, non-numeric, non-finite, fractional or negative labels, or labels
    beyond the `classes` array."""
    if len(y) == 0:
        raise ConfigError([f"{path}: no samples (y is empty)"])
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
            or y.dtype == np.bool_):
        raise ConfigError([f"{path}: y has dtype {y.dtype}; labels must be integers 0..K-1"])
    problems = []
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        if bad.any():
            problems.append(f"{int(bad.sum())} non-finite label(s)")
        fractional = np.isfinite(y) & (y != np.round(y))
        if fractional.any():
            problems.append(f"{int(fractional.sum())} fractional label(s), e.g. "
                            f"{y[fractional][0]:g}")
        if problems:
            raise ConfigError([f"{path}: y has {'; '.join(problems)}; labels must be integers "
                               "0..K-1"])
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ConfigError([f"{path}: y has {int((y < 0).sum())} negative label(s), e.g. "
                           f"{int(y[y < 0][0])}; labels must be integers 0..K-1"])
    if classes is not None and y.max() >= len(classes):
        raise ConfigError([f"{path}: y has labels up to {int(y.max())} but `classes` names "
                           f"{len(classes)}"])
    return y


def _check_pixels(path: Path, x: np.ndarray, chunk: int = 4096) -> None:
    """ConfigError naming the file when `x` is not numeric, or a float array holds non-finite
    values or values outside [0, 1] (counted chunk by chunk: a memory-mapped array is never
    read whole)."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise ConfigError([f"{path}: x has dtype {x.dtype}; images must be uint8 (0-255) or "
                           "float in [0, 1]"])
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = samples = 0
    low, high = np.inf, -np.inf
    for i in range(0, len(x), chunk):
        block = np.asarray(x[i:i + chunk])
        finite = np.isfinite(block)
        bad += int((~finite).sum())
        samples += int((~finite).reshape(len(block), -1).any(1).sum())
        if finite.any():
            low, high = min(low, float(block[finite].min())), max(high, float(block[finite].max()))
    if bad:
        raise ConfigError([f"{path}: x has {bad} non-finite value(s) (NaN or inf) in {samples} "
                           f"of {len(x)} samples"])
    if low < -1e-3 or high > 1 + 1e-3:
        raise ConfigError([f"{path}: x is float with values in [{low:g}, {high:g}]; float "
                           "images must be in [0, 1] (or store uint8 0-255)"])


def _mapped(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed .npy member of a zip archive, or None."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                + int.from_bytes(local[28:30], "little")
            f.seek(start)
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                return None
            shape, fortran, dtype = readers[version](f)
            offset = f.tell()
    if dtype.hasobject or fortran:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def folder(path: Path, size: tuple[int, int], channels: int,
           allow_empty: bool = False) -> Samples:
    """An image folder: one subfolder per class (its name), images inside. A class folder
    without images is an error unless `allow_empty` (a val / test split may lack a class)."""
    if not path.is_dir():
        raise ConfigError([f"{path}: image folder not found"])
    # Hidden folders (.ipynb_checkpoints, .git) are not classes.
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise ConfigError([f"{path}: needs one subfolder per class (found {len(classes)})"])
    _check_class_links(path, classes)
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ConfigError([f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found"])
    empty = [name for label, name in enumerate(classes) if label not in set(labels)]
    if empty and not allow_empty:
        raise ConfigError([f"{path}: class folder(s) {', '.join(empty)} hold no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})"])
    return Samples(FileStore(files, size, channels), np.array(labels, dtype=np.int64), classes)


def _check_class_links(path: Path, classes: list[str]) -> None:
    """ConfigError naming the class folder when a symlinked one points into the dataset (its
    root: a loop; a folder inside: images read again, under another label), at a folder that
    holds the dataset (a loop), or where another class folder points (the same images twice).
    A symlink to a folder elsewhere, apart from the others, is a class like any other."""
    root, seen = path.resolve(), {}
    for name in classes:
        folder = path / name
        target = folder.resolve()
        if folder.is_symlink():
            if target == root or root in target.parents:
                where = "the dataset folder itself (a loop)" if target == root else \
                    f"{target.relative_to(root)}, inside the dataset (its images read twice)"
                raise ConfigError([f"{folder}: class folder is a symlink to {where}; give "
                                   "the class a folder of its own"])
            if target in root.parents:
                raise ConfigError([f"{folder}: class folder is a symlink to {target}, a "
                                   "folder that holds the dataset (a loop)"])
        if target in seen:
            raise ConfigError([f"{folder}: class folder is a symlink to the same folder as "
                               f"class {seen[target]} ({target}); its images would count "
                               "twice, under two labels"])
        seen[target] = name


def manifest(path: Path, size: tuple[int, int], channels: int) -> Samples:
    """A manifest: .csv with a header naming columns `path` and `label`, or .jsonl with one
    {"path": ..., "label": ...} object per line. Image paths are relative to the manifest's
    folder; labels are class names (sorted numerically when all are integers)."""
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError([f"{path}: a manifest must be .csv or .jsonl"])
    rows = manifest_rows(path)
    if not rows:
        raise ConfigError([f"{path}: the manifest lists no images"])
    names = sorted({label for _file, label in rows},
                   key=lambda c: (0, int(c), "") if c.lstrip("-").isdigit() else (1, 0, c))
    index = {name: i for i, name in enumerate(names)}
    files = [(path.parent / file) for file, _label in rows]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise ConfigError([f"{path}: {len(absent)} listed image(s) not found, e.g. {absent[0]}"])
    y = np.array([index[label] for _file, label in rows], dtype=np.int64)
    return Samples(FileStore(files, size, channels), y, names)


def manifest_rows(path: Path) -> list[tuple[str, str]]:
    """(image path as written, label) for every row of a .csv or .jsonl manifest."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8"
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError([f"{path}: the CSV header lacks column(s) "
                                   f"{', '.join(sorted(missing))} (has "
                                   f"{', '.join(reader.fieldnames or []) or 'none'})"])
            for line, row in enumerate(reader, 2):
                if not row["path"] or row["label"] in (None, ""):
                    raise ConfigError([f"{path}:{line}: empty path or label"])
                rows.append((row["path"], str(row["label"]).strip()))
        else:
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                    rows.append((str(row["path"]), str(row["label"]).strip()))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError([f"{path}:{line}: expected an object with path and "
                                       f"label ({type(exc).__name__}: {exc})"]) from None
    return rows


def read(source: str, path: Path | None, size: tuple[int, int] | None,
         channels: int | None, evaluation: bool = False) -> Samples:
    """The samples at `path` for a DataConfig `source` (digits takes no path); `evaluation`:
    a given val / test split, whose class folders may be empty."""
    if source == "digits":
        return digits(size)
    if source == "npz":
        return npz(path, size)
    if source == "manifest":
        return manifest(path, size, channels or 3)
    return folder(path, size, channels or 3, allow_empty=evaluation)
