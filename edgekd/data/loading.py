"""The pipeline's data as three splits that read images on demand.

Data comes split (`train` / `val` / `test` paths, the common layout) or in one place (`path`),
which is split here: stratified and fixed by the pipeline's seed, so every stage and every
rerun sees the same samples. Class names must agree across given splits. Normalisation
statistics come from a seeded sample of the train split (or the config); they are recorded
with the model (edgekd.models.Normalize) and applied inside it. Models take float32 NCHW in
[0, 1]; image files stay uint8 until a batch reaches the training device.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.config import DataConfig
from edgekd.data import leakage, manifests, sources
from edgekd.data.sources import ArrayStore, Samples
from edgekd.files import atomic_path, sha256_file
from edgekd.schema import ConfigError


@dataclass
class Part:
    """One split: rows of a store and their labels. `len(part)` samples."""

    name: str
    """train, val or test."""
    store: ArrayStore | sources.FileStore
    rows: np.ndarray
    """The split's rows in `store` (int64)."""
    y: np.ndarray
    """Labels, int64, one per row."""
    key: str = ""
    """Names this split's content (data key + split name): teacher-output caches use it."""
    num_workers: int | str = "auto"
    """The config's `num_workers` (see `workers`)."""

    def __len__(self) -> int:
        return len(self.rows)

    def workers(self, augmenting: bool = False) -> int:
        """DataLoader workers for this split: the config's number, or auto (0 for data in
        memory without augmentation, else min(8, cores - 1), at least 1)."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        if self.in_memory and not augmenting:
            return 0
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    @property
    def in_memory(self) -> bool:
        return self.store.in_memory

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Samples at `positions` (0..len-1) as n x C x H x W, uint8 or float32 in [0, 1]."""
        return self.store.read(self.rows[np.asarray(positions)])

    def inputs(self, positions: np.ndarray) -> np.ndarray:
        """Like `read`, always float32 in [0, 1] (a model's input)."""
        x = self.read(positions)
        return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x

    def chunks(self, size: int = 1024):
        """The split's inputs in order, `size` samples at a time (float32, see `inputs`)."""
        for i in range(0, len(self), size):
            yield self.inputs(np.arange(i, min(i + size, len(self))))

    def array(self) -> np.ndarray:
        """The whole split as one float32 array (n x C x H x W): for runtimes that take
        arrays. Memory: n x C x H x W x 4 bytes."""
        return np.concatenate(list(self.chunks())) if len(self) else \
            np.zeros((0, *self.store.shape), np.float32)


@dataclass
class Splits:
    """Train / val / test splits, the class names and where the test split came from."""

    train: Part
    val: Part
    test: Part
    classes: list[str]
    test_origin: str = ""
    """"given: <path>" or "held out: <fraction> of <source> (seed <n>)": reported with
    every accuracy."""
    stats: tuple[list[float], list[float]] | None = None
    stats_samples: int = 2048
    seed: int = 0
    warnings: list[str] = field(default_factory=list)
    """What a person should see about the data: a given split holding a few samples of the
    training data (the test split's is also said in `test_origin`)."""
    _meta: dict | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one sample."""
        return tuple(self.train.store.shape)

    # Whole splits as arrays (Part.array: they hold the split in memory), for small data.
    x_train = property(lambda self: self.train.array())
    y_train = property(lambda self: self.train.y)
    x_val = property(lambda self: self.val.array())
    y_val = property(lambda self: self.val.y)
    x_test = property(lambda self: self.test.array())
    y_test = property(lambda self: self.test.y)

    def meta(self) -> dict:
        """What a model needs to know about its inputs: shape, classes and normalisation."""
        if self._meta is None:
            mean, std = self.stats or channel_stats(self.train, self.stats_samples, self.seed)
            self._meta = {"input_shape": list(self.input_shape),
                          "num_classes": len(self.classes), "in_channels": self.input_shape[0],
                          "classes": self.classes, "mean": mean, "std": std,
                          "input_range": [0.0, 1.0], "layout": "NCHW"}
        return self._meta

    def workers(self, augmenting: bool) -> int:
        """DataLoader workers for the train split (Part.workers)."""
        return self.train.workers(augmenting)


def channel_stats(part: Part, samples: int, seed: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (inputs in [0, 1]) over a seeded sample of up to `samples`
    images, read in chunks: memory is one chunk, not the split."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(part), size=min(samples, len(part)), replace=False))
    total = np.zeros(part.store.shape[0], np.float64)
    squares, count = np.zeros_like(total), 0
    for i in range(0, len(rows), 256):
        x = part.inputs(rows[i:i + 256]).astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0)) + 1e-6
    return mean.tolist(), std.tolist()


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


def _aligned(name: str, path: Path, samples: Samples, classes: list[str]) -> np.ndarray:
    """`samples`' labels as indices into the train split's `classes`; ConfigError naming the
    missing and extra classes when the two sets differ."""
    missing = sorted(set(classes) - set(samples.classes)) if samples.named else []
    extra = sorted(set(samples.classes) - set(classes))
    if missing or extra:
        said = [f"missing {', '.join(missing)}" if missing else "",
                f"extra {', '.join(extra)}" if extra else ""]
        raise ConfigError([f"data.{name}: {path}: its classes differ from the train split's: "
                           f"{'; '.join(s for s in said if s)}"])
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[samples.classes[label]] for label in samples.y], dtype=np.int64)


def _check_classes(path: Path | None, first: Samples, parts: dict[str, Part]) -> None:
    """At least two classes, numbered without gaps when only numbers name them, and at least
    as many samples as classes in every split; else ConfigError naming the file."""
    where = path or "the built-in digits"
    present = np.unique(first.y)
    if len(present) < 2:
        raise ConfigError([f"{where}: only one class ({first.classes[present[0]]}); "
                           "classification needs at least two"])
    if not first.named and len(present) < len(first.classes):
        gaps = sorted(set(range(len(first.classes))) - set(present.tolist()))
        raise ConfigError([f"{where}: labels run up to {len(first.classes) - 1} but "
                           f"{len(gaps)} number(s) in between have no sample (e.g. {gaps[0]}): "
                           "that would build a model with unused outputs; number the classes "
                           "0..K-1 or give a `classes` array"])
    for name, part in parts.items():
        if len(part) < len(first.classes):
            raise ConfigError([f"{where}: the {name} split has {len(part)} sample(s) for "
                               f"{len(first.classes)} classes; give more data or change "
                               "data.split"])


def load(cfg: DataConfig, seed: int) -> Splits:
    """Read the configured data and split it (given splits, or stratified and seeded).

    Raises ConfigError (one line per problem, naming the file) for unreadable data and for
    class names that differ between given splits."""
    key = data_key(cfg, seed)
    def read(path: Path, evaluation: bool = False) -> Samples:
        return sources.read(cfg.source, path, cfg.image_size, cfg.channels, evaluation)

    split_paths = {k: p for k, p in cfg.paths().items() if k != "path"}
    leakage.disjoint_splits(split_paths, {})  # one location given twice: refused before reading
    first = read(cfg.train if cfg.given_splits else cfg.path)
    files = {"train": first.store.files} if isinstance(first.store, sources.FileStore) else {}
    whole = np.arange(len(first.y))
    # What is not given is held out of the first location, stratified (0 of a given split).
    train, val, test = _stratified_split(
        first.y, cfg.split.val if cfg.val is None else 0.0,
        cfg.split.test if cfg.test is None else 0.0, seed) \
        if cfg.val is None or cfg.test is None else (whole, whole[:0], whole[:0])
    parts = {"train": Part("train", first.store, train, first.y[train], f"{key}-train")}
    notes: dict[str, str] = {}  # given splits holding a few training samples
    for name, rows in (("val", val), ("test", test)):
        given = getattr(cfg, name)
        if given is not None:
            samples = read(given, evaluation=True)
            if samples.store.shape != first.store.shape:
                raise ConfigError([f"data.{name}: {given}: images are {samples.store.shape} "
                                   f"(C, H, W), the train split's {first.store.shape}"])
            y = _aligned(name, given, samples, first.classes)
            if isinstance(samples.store, sources.FileStore):
                files[name] = samples.store.files
            parts[name] = Part(name, samples.store, np.arange(len(y)), y, f"{key}-{name}")
            copies = leakage.training_copies(name, given, samples.store, cfg.train,
                                             first.store)
            if copies:
                notes[name] = copies
        else:
            parts[name] = Part(name, first.store, rows, first.y[rows], f"{key}-{name}")
    source = ("data.train" if cfg.given_splits else "data.path", cfg.train or cfg.path)
    held = leakage.held_out_copies(*source, first.store, train, {
        n: r for n, r in (("val", val), ("test", test)) if getattr(cfg, n) is None})
    notes.update(held)
    origin = f"given: {cfg.test}" if cfg.test is not None else (
        f"held out by edgekd: {cfg.split.test:.0%} of "
        f"{cfg.train or cfg.path or 'the built-in digits'} (stratified, seed {seed})")
    origin += f" ({notes['test']})" if "test" in notes else ""
    stats = (cfg.mean, cfg.std) if cfg.mean is not None else None
    if stats is not None and len(stats[0]) != first.store.shape[0]:
        raise ConfigError([f"data.mean: {len(stats[0])} values for images with "
                           f"{first.store.shape[0]} channel(s)"])
    leakage.disjoint_splits(split_paths, files)
    _check_classes(cfg.train if cfg.given_splits else cfg.path, first, parts)
    for part in parts.values():
        part.num_workers = cfg.num_workers
    return Splits(parts["train"], parts["val"], parts["test"], first.classes, origin, stats,
                  cfg.stats_samples, seed,
                  [f"{source[0]}: {source[1]}: {v}" if k in held else f"data.{k}: "
                   f"{getattr(cfg, k)}: {v}" for k, v in notes.items()])


def data_key(cfg: DataConfig, seed: int) -> str:
    """A hash naming this data and split: config (worker count aside), seed and the content
    of every input file (files by hash; the images of folders, symlinked class folders
    included, and of manifests by name, size and modification time)."""
    doc = cfg.model_dump(mode="json", exclude={"num_workers"})
    h = hashlib.sha256(json.dumps([doc, seed], sort_keys=True).encode())
    for path in cfg.paths().values():
        if path.is_file():
            h.update(sha256_file(path).encode())
            if path.suffix.lower() in sources.MANIFEST_SUFFIXES:
                files = [path.parent / f for f, _label in manifests.rows(path)]
                _stat_hash(h, path.parent, files)
        elif path.is_dir():
            _stat_hash(h, path, [f for _name, files in sources.listing(path) for f in files])
    return h.hexdigest()[:16]


def _stat_hash(h, root: Path, files: list[Path]) -> None:
    """Each file's name (bytes: names need not be UTF-8), size and modification time."""
    for file in files:
        name = os.fsencode(file.relative_to(root) if file.is_relative_to(root) else file)
        try:
            stat = file.stat()
        except OSError:  # missing or a dangling link: the loader refuses it by name
            h.update(name + b"\0missing\0")
            continue
        h.update(name + f"\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())


def from_arrays(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray, classes: list[str] | None = None,
                seed: int = 0) -> Splits:
    """Splits over arrays in memory (float32 NCHW in [0, 1] or uint8, labels int64)."""
    classes = classes or [str(c) for c in range(int(max(y_train.max(), y_val.max(),
                                                         y_test.max())) + 1)]
    parts = [Part(name, ArrayStore(x), np.arange(len(x)), np.asarray(y, np.int64),
                  f"arrays-{name}-{_array_key(x)}")
             for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val),
                                ("test", x_test, y_test))]
    return Splits(*parts, classes, "given: arrays", seed=seed)


def _array_key(x: np.ndarray) -> str:
    h = hashlib.sha256(str((x.shape, x.dtype.str)).encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()[:16]


def calibration_samples(splits: Splits, seed: int, count: int) -> np.ndarray:
    """A fixed, seeded subset of `count` training inputs (all of them if fewer), in their
    original order: the post-training calibration set. N x C x H x W float32."""
    rng = np.random.default_rng(seed)
    count = min(count, len(splits.train))
    return splits.train.inputs(np.sort(rng.choice(len(splits.train), size=count,
                                                  replace=False)))


def save_npz(path: Path, x: np.ndarray | Part, y: np.ndarray | None = None,
             chunk: int = 1024) -> Path:
    """Write `x` and `y` (or a split's float32 inputs and labels) as an uncompressed .npz,
    atomically (runtimes and devices read the test split this way). A split is written in
    chunks: memory is one chunk, not the split."""
    if not isinstance(x, Part):
        with atomic_path(path) as tmp:
            np.savez(tmp, x=x, y=y)
        return path
    part = x
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (len(part), *part.store.shape)}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                   allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for x_chunk in part.chunks(chunk):
                f.write(x_chunk.tobytes())
        with archive.open("y.npy", "w") as f:
            np.lib.format.write_array(f, part.y)
    return path
