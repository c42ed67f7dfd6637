"""Readers: each turns one data location into a `Store` of images, its labels and class names.

A store reads images on demand, so nothing holds a dataset in memory that does not already
live there: image files are decoded when a batch asks for them (uint8), an uncompressed .npz
is memory-mapped, and only the built-in digits (1,797 images of 8x8) are an array in memory.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data import checks, manifests
from edgekd.schema import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}


class ArrayStore:
    """Images in an array (in memory or memory-mapped), N x C x H x W or N x H x W x C.

    uint8 arrays are served as uint8, others as float32 divided by `scale` (default: 65535 for
    uint16, 255 for other integer types, 1 for float, taken to be in [0, 1]; see
    edgekd.data.checks.pixel_scale). With `size`, images are resized (bilinear) when read."""

    in_memory = True

    def __init__(self, x: np.ndarray, nhwc: bool = False, size: tuple[int, int] | None = None,
                 scale: float | None = None):
        self.x, self.nhwc = x, nhwc
        self.scale = scale or (65535.0 if x.dtype == np.uint16 else 255.0
                               if np.issubdtype(x.dtype, np.integer) else 1.0)
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
            x = x.astype(np.float32)
            x = x / np.float32(self.scale) if self.scale != 1.0 else x
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
                    img = _eight_bit(_upright(img)).convert(self.mode)
                    if img.size != (self.size[1], self.size[0]):
                        img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
            except Image.DecompressionBombError as exc:
                raise ConfigError([f"{file}: refused, too many pixels for an image ({exc}); "
                                   f"resize it before training"]) from None
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise ConfigError([f"{file}: cannot read as an image ({exc})"]) from None
            except ConfigError as exc:  # 32-bit pixels beyond what is read (_eight_bit)
                raise ConfigError([f"{file}: {exc.lines[0]}"]) from None
            out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return out


def _upright(img):
    """`img` turned the way its EXIF orientation says it is seen (cameras store a portrait
    photo sideways and say so in this tag; every viewer turns it)."""
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) in (0, 1):  # 0x0112: Orientation; 1: as stored
        return img
    return ImageOps.exif_transpose(img)


def _eight_bit(img):
    """A 16-bit (or 32-bit integer, in 0-65535) greyscale PIL image as 8-bit "L", scaled by
    its bit depth (65535 -> 255; checks.integer_pixel_scale); a 32-bit float one ("F") by its
    range (checks.float_pixel_scale). PIL's own convert("L") clips wide values at 255 (all
    white) and floats in [0, 1] to 0 (black)."""
    from PIL import Image

    if img.mode == "F":
        wide = np.asarray(img).astype(np.float64)
        wide *= checks.float_pixel_scale(wide)
    elif img.mode in checks.WIDE_INTEGER_MODES:
        wide = np.asarray(img).astype(np.float64)
        wide *= checks.integer_pixel_scale(wide)
    else:
        return img
    return Image.fromarray(np.clip(wide + 0.5, 0, 255).astype(np.uint8), "L")


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
    whole otherwise (np.savez_compressed). Its layout, dtype and values are checked
    (edgekd.data.checks.layout and pixel_scale)."""
    checks.regular_file(path)
    problem = checks.archive_problem(path)  # else np.load reads it as a pickle, and says so
    if problem:
        raise ConfigError([f"{path}: {problem}"])
    try:
        blob = np.load(path, allow_pickle=False)
        names = blob.files
        missing = [k for k in ("x", "y") if k not in names]
        if missing:
            raise ConfigError([f"{path}: .npz is missing array(s) {', '.join(missing)} "
                               f"(has {', '.join(names) or 'none'})"])
        y = _member(path, blob, "y").reshape(-1)
        classes = [str(c) for c in _member(path, blob, "classes")] if "classes" in names \
            else None
        x = _mapped(path, "x.npy")
        x = _member(path, blob, "x") if x is None else x
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError([f"{path}: cannot read as .npz ({exc})"]) from None
    if len(x) != len(y):
        raise ConfigError([f"{path}: x has {len(x)} samples but y has {len(y)}"])
    if x.ndim in (3, 4) and 0 in x.shape[1:]:
        raise ConfigError([f"{path}: x has shape {x.shape}: an image dimension of size 0"])
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ConfigError([f"{path}: x must be N x H x W or N x C x H x W, got shape {x.shape}"])
    nhwc = checks.layout(path, x.shape)
    y = checks.labels(path, y, classes)
    if classes is not None:
        checks.distinct_classes(path, classes)
    scale = checks.pixel_scale(path, x)
    named = classes is not None
    if classes is None:
        classes = [str(c) for c in range(int(y.max()) + 1)]
    return Samples(ArrayStore(x, nhwc, size, scale), y, classes, named)


def _member(path: Path, blob, name: str) -> np.ndarray:
    """The array `name` of the opened .npz `blob`; ConfigError naming the member when it is
    not a .npy (np.load hands such a member over as raw bytes)."""
    value = blob[name]
    if not isinstance(value, np.ndarray):
        raise ConfigError([f"{path}: member {name} is not a .npy array ({len(value)} bytes "
                           f"without the .npy header); save it with np.savez"])
    return value


def _mapped(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed .npy member of a zip archive, or None."""
    with zipfile.ZipFile(path) as archive:
        if member not in archive.namelist():
            return None
        info = archive.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                + int.from_bytes(local[28:30], "little")
            f.seek(start)
            if f.read(6) != b"\x93NUMPY":  # not a .npy: _member names it
                return None
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
    without images is an error unless `allow_empty` (a val / test split may lack a class).
    Every image is checked now (edgekd.data.checks.check_images), not when a stage reads it."""
    if not path.is_dir():
        raise ConfigError([f"{path}: image folder not found"])
    found = listing(path)
    classes = [name for name, _files in found]
    if len(classes) < 2:
        raise ConfigError([f"{path}: needs one subfolder per class (found {len(classes)})"])
    for name in classes:  # class names go into the model, its reports and JSON
        if checks.shown(name) != name:  # not UTF-8, or control characters
            raise ConfigError([f"{checks.shown(path / name)}: a class folder whose name is "
                               "not printable UTF-8 text; rename it"])
    checks.distinct_classes(path, classes)
    checks.class_links(path, classes)
    files, labels = [], []
    for label, (_name, images) in enumerate(found):
        files += images
        labels += [label] * len(images)
    if not files:
        raise ConfigError([f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found"])
    empty = [name for label, name in enumerate(classes) if label not in set(labels)]
    if empty and not allow_empty:
        raise ConfigError([f"{path}: class folder(s) {', '.join(empty)} hold no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})"])
    checks.distinct_files(path, files)
    checks.check_images(files, path)
    return Samples(FileStore(files, size, channels), np.array(labels, dtype=np.int64), classes)


def listing(path: Path) -> list[tuple[str, list[Path]]]:
    """The class folders of the image folder `path` (sorted; symlinked ones followed, hidden
    ones such as .git are not classes) and each one's files with an image suffix, whatever
    they are (a dangling link or a FIFO too: the loader refuses them by name, the data key
    hashes them)."""
    try:
        entries = [d for d in path.iterdir() if not d.name.startswith(".")]
        for d in entries:  # a class folder on a disk not mounted would vanish silently
            if d.is_symlink() and not d.exists():
                checks.regular_file(d)
        classes = sorted(d.name for d in entries if d.is_dir())
        return [(name, sorted(f for f in (path / name).iterdir()
                              if f.suffix.lower() in IMAGE_SUFFIXES)) for name in classes]
    except OSError as exc:
        raise ConfigError([f"{checks.shown(exc.filename or path)}: cannot list the folder "
                           f"({exc.strerror or exc})"]) from None


def manifest(path: Path, size: tuple[int, int], channels: int) -> Samples:
    """A manifest: .csv with a header naming columns `path` and `label`, or .jsonl with one
    {"path": ..., "label": ...} object per line. Image paths are relative to the manifest's
    folder and inside it; labels are class names (sorted numerically when all are integers).
    Every listed image is checked now (edgekd.data.checks.check_images)."""
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError([f"{path}: a manifest must be .csv or .jsonl"])
    rows = manifests.rows(path)
    if not rows:
        raise ConfigError([f"{path}: the manifest lists no images"])
    names = sorted({label for _file, label in rows},
                   key=lambda c: (0, int(c), "") if re.fullmatch(r"-?[0-9]+", c) else (1, 0, c))
    checks.distinct_classes(path, names)
    index = {name: i for i, name in enumerate(names)}
    files = [(path.parent / file) for file, _label in rows]
    absent = [f for f in files if not os.path.lexists(f)]
    if absent:
        raise ConfigError([f"{path}: {len(absent)} listed image(s) not found, e.g. {absent[0]}"])
    checks.check_images(files, path)
    y = np.array([index[label] for _file, label in rows], dtype=np.int64)
    return Samples(FileStore(files, size, channels), y, names)


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
