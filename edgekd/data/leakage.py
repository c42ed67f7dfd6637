"""Given splits that hold training data: a val / test split that is the training data's file or
folder, shares its image files, or holds its samples in another file (an .npz copied, or cut
from the training one). A test split that holds training data measures how well the model
remembers, not how it does.

Image files are compared by identity (device and inode: links of either kind), not decoded: a
folder or manifest is read image by image when a batch asks, and decoding every image of two
splits at load would read the dataset twice (a copy of an image under another name passes).
Arrays are compared by content, one digest per sample.
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
    real = {name: {_identity(f): f for f in found} for name, found in files.items()}
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


def _identity(file: Path) -> tuple | str:
    """What makes two names one image file: its device and inode (a symbolic or a hard link
    is the same file), or its real path where it cannot be read."""
    try:
        st = os.stat(file)
    except OSError:
        return os.path.realpath(file)
    return (st.st_dev, st.st_ino)


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


def held_out_copies(field: str, path: Path | None, store: ArrayStore | FileStore,
                    train: np.ndarray, held: dict[str, np.ndarray]) -> dict[str, str]:
    """For splits edgekd held out of one array (`held`: split name -> rows of `store`,
    read from `field` = `path`), how many of their samples are, pixel for pixel, samples at
    the training rows `train` (the data repeats samples). Half or more of a split:
    ConfigError naming the file and the count. Some: a line per split, for the report."""
    if not isinstance(store, ArrayStore) or not any(len(r) for r in held.values()):
        return {}
    digests = list(_digests(store, np.arange(len(store))))
    seen = {digests[i] for i in train}
    notes = {}
    for name, rows in held.items():
        copies = [int(i) for i in rows if digests[i] in seen]
        if not copies:
            continue
        count = (f"{len(copies)} of the {len(rows)} samples held out for {name} are identical "
                 "to training samples")
        if 2 * len(copies) >= len(rows):
            raise ConfigError([f"{field}: {shown(path)}: {count} (the data repeats samples, "
                               f"e.g. sample {copies[0]}); a split that holds training data "
                               "measures how well the model remembers, not how it does: "
                               "remove the repeats"])
        notes[name] = f"{count}, e.g. sample {copies[0]}"
    return notes


def _digests(store: ArrayStore, rows: np.ndarray, chunk_bytes: int = 64 << 20) -> Iterator[bytes]:
    """A blake2b digest of each sample of `store` at `rows`: its pixels as the model sees
    them (scaled to [0, 1] as `ArrayStore.read` does), to 16-bit precision, channels first.
    The same images stored as uint8, as uint16 (x 257), as int32 or as float32 in [0, 1], N x
    H x W x C or N x C x H x W, give the same digests (float16 copies do not: it holds 1/255
    steps only to about 1/2000; 8-bit precision would find them but make tiny images of
    random floats collide). Read chunk by chunk (float64 per chunk): a memory-mapped array is
    never read whole."""
    x = store.x
    step = max(1, chunk_bytes // max(1, 8 * int(np.prod(x.shape[1:]))))
    for i in range(0, len(rows), step):
        block = np.asarray(x[rows[i:i + step]], dtype=np.float64) * (65535.0 / store.scale)
        block = block.transpose(0, 3, 1, 2) if store.nhwc else block
        block = np.ascontiguousarray(np.clip(np.rint(block), 0, 65535).astype(np.uint16))
        for sample in block:
            yield hashlib.blake2b(sample, digest_size=16).digest()
