"""Given splits that hold training data: a val / test split that is the training data's file or
folder, shares its image files, or holds its samples in another file (an .npz copied, or cut
from the training one). A test split that holds training data measures how well the model
remembers, not how it does.

Image files are compared by their real path, not decoded: a folder or manifest is read image by
image when a batch asks, and decoding every image of two splits at load would read the dataset
twice. Arrays are compared by content, one digest per sample.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekd.data.checks import shown
from edgekd.data.sources import ArrayStore, FileStore
from edgekd.schema import ConfigError


def disjoint_splits(paths: dict[str, Path], files: dict[str, list[Path]]) -> None:
    """ConfigError naming two given splits (`paths`: data.train / val / test as configured)
    that are one file or folder, or (`files`: each split's image files) share images."""
    names = list(paths)
    for i, name in enumerate(names):
        for other in names[:i]:
            if paths[name].resolve() == paths[other].resolve():
                what = "folder" if paths[name].is_dir() else "file"
                raise ConfigError([f"data.{name}: {shown(paths[name])}: the same {what} as "
                                   f"data.{other} ({shown(paths[other])}); give each split "
                                   "data of its own"])
    real = {name: {os.path.realpath(f): f for f in found} for name, found in files.items()}
    for i, name in enumerate(names):
        for other in names[:i]:
            if name not in real or other not in real:
                continue
            shared = [f for key, f in real[name].items() if key in real[other]]
            if shared:
                raise ConfigError([f"data.{name}: {shown(paths[name])}: {len(shared)} of its "
                                   f"{len(real[name])} image(s) are also in data.{other} "
                                   f"({shown(paths[other])}), e.g. {shown(shared[0])}; a "
                                   "sample must be in one split only"])


def training_copies(name: str, path: Path, store: ArrayStore | FileStore, train_path: Path,
                    train: ArrayStore | FileStore) -> str | None:
    """How many samples of the given split `name` (its `store`, read from `path`) are, pixel
    for pixel, samples of the training data (`train`, read from `train_path`, a val split
    held out of it included). Half or more: ConfigError naming both files and the count (a
    copy of training data, not a test). Some: a line saying so, for the report (real datasets
    hold a few exact duplicates). None: none, or image files (see the module's docstring)."""
    if not isinstance(store, ArrayStore) or not isinstance(train, ArrayStore):
        return None
    seen = set(_digests(train, np.arange(len(train))))
    copies = [i for i, digest in enumerate(_digests(store, np.arange(len(store))))
              if digest in seen]
    if not copies:
        return None
    count = f"{len(copies)} of its {len(store)} samples are identical to training samples"
    if 2 * len(copies) >= len(store):
        raise ConfigError([f"data.{name}: {shown(path)}: {count} (data.train, "
                           f"{shown(train_path)}), e.g. sample {copies[0]}; a split that holds "
                           "training data measures how well the model remembers, not how it "
                           f"does: give the {name} split samples of its own"])
    return f"{count}, e.g. sample {copies[0]}"


def _digests(store: ArrayStore, rows: np.ndarray, chunk_bytes: int = 64 << 20) -> Iterator[bytes]:
    """A blake2b digest of each sample of `store` at `rows`, of its dtype and its pixels
    channels first (an N x H x W x C array holds the same images as an N x C x H x W one),
    read chunk by chunk: a memory-mapped array is never read whole."""
    x, tag = store.x, store.x.dtype.str.encode()
    step = max(1, chunk_bytes // max(1, x.dtype.itemsize * int(np.prod(x.shape[1:]))))
    for i in range(0, len(rows), step):
        block = np.asarray(x[rows[i:i + step]])
        block = np.ascontiguousarray(block.transpose(0, 3, 1, 2) if store.nhwc else block)
        for sample in block:
            digest = hashlib.blake2b(tag, digest_size=16)
            digest.update(sample)
            yield digest.digest()
