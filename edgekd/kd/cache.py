"""Teacher outputs: soft targets and the hinted features a loss needs, per batch.

Online, the teacher runs on each batch where the batch is (the training device, inside the
training loop's autocast). With a cache directory the outputs are computed once over the
train split and stored as .npy files memory-mapped on read, keyed by a hash of the teacher's
weights and of the split, so every epoch, the baseline's sibling runs and later runs of the
same pipeline reuse them; a batch's rows are looked up by the samples' positions. A view
larger than FEATURE_CACHE_BYTES is computed online instead.

Caching is valid only for unaugmented inputs (a sample's teacher output never changes): the
training loop passes no positions for augmented batches, and the configs reject a cache
together with augmentation.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgekd import parallel
from edgekd.data import Part
from edgekd.kd import losses
from edgekd.kd.hooks import Taps

FEATURE_CACHE_BYTES = 256 * 2**20
"""The largest view (whole training split, float32) stored on disk; larger ones run online."""


@dataclass(frozen=True)
class View:
    """One output of a teacher: its logits, a layer's output, or a layer's attention map."""

    kind: Literal["logits", "feature", "attention"]
    path: str = ""
    p: float = 2.0

    @property
    def name(self) -> str:
        if self.kind == "logits":
            return "logits"
        return f"{self.kind}:{self.path}" + (f":p{self.p:g}" if self.kind == "attention" else "")


LOGITS = View("logits")


def compute(model: nn.Module, x: torch.Tensor, views: list[View]) -> dict[str, torch.Tensor]:
    """The views of a frozen model for one batch (eval mode, no gradients)."""
    model.eval()
    paths = [v.path for v in views if v.kind != "logits"]
    with torch.no_grad(), Taps(model, paths) as taps:
        logits = model(x)
        out = {}
        for view in views:
            if view.kind == "logits":
                out[view.name] = logits
            elif view.kind == "feature":
                out[view.name] = taps.outputs[view.path]
            else:
                out[view.name] = losses.attention_map(taps.outputs[view.path], view.p)
    return out


def model_key(model: nn.Module) -> str:
    """Hash of a model's structure and weights."""
    h = hashlib.sha256(repr(model).encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


class TeacherOutputs:
    """`outputs(x, index)` -> {view name: tensor on x's device} for a batch of training
    inputs `x` (N, C, H, W) and their positions `index` in the train split (or None).

    Cached views are looked up by position; the rest, and every view when `index` is None,
    come from running the teacher on `x` (moved to x's device on first use). Without
    `cache_dir` everything runs online. `device` is where the cache is computed.
    """

    def __init__(self, model: nn.Module, views: list[View], train: Part | None,
                 cache_dir: Path | None, device: torch.device | None = None):
        self.model = model.eval()
        self.views = list(dict.fromkeys(views))
        self.tables: dict[str, np.ndarray] = {}
        if cache_dir is not None and train is not None:
            folder = cache_dir / f"teacher-{model_key(model)}-{train.key}"
            self.tables = _cached_tables(model, self.views, train, folder,
                                         device or torch.device("cpu"))
        self.online = [v for v in self.views if v.name not in self.tables]

    def __call__(self, x: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if next(self.model.parameters(), x).device != x.device:
            self.model.to(x.device)
        views = self.views if index is None else self.online
        out = compute(self.model, x, views) if views else {}
        if index is not None:
            rows = index.numpy()
            for name, table in self.tables.items():
                out[name] = torch.from_numpy(np.ascontiguousarray(table[rows])).to(
                    x.device, non_blocking=True)
        return out

    def table(self, name: str) -> np.ndarray:
        """A cached view for the whole training array (memory-mapped)."""
        return self.tables[name]


def _file_name(view: View) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", view.name) + ".npy"


def _cached_tables(model: nn.Module, views: list[View], train: Part, folder: Path,
                   device: torch.device) -> dict[str, np.ndarray]:
    """Memory-mapped tables of the views small enough to store, computing missing ones.

    Under torchrun only rank 0 computes and writes; the others wait, then map the files."""
    probe = compute(model.cpu(), torch.from_numpy(train.inputs(np.arange(1))), views)
    small = [v for v in views
             if probe[v.name].numel() * 4 * len(train) <= FEATURE_CACHE_BYTES]
    shapes = {v.name: (len(train), *probe[v.name].shape[1:]) for v in small}
    missing = [v for v in small if _table(folder / _file_name(v), shapes[v.name]) is None]
    # Every rank takes part in on_leader's barrier, even one that already sees the files.
    parallel.on_leader(lambda: missing and _write_tables(
        model, missing, train, folder, {v.name: shapes[v.name][1:] for v in missing}, device))
    return {v.name: _table(folder / _file_name(v), shapes[v.name]) for v in small}


def _table(path: Path, shape: tuple) -> np.ndarray | None:
    """The cached table at `path`, memory-mapped, or None when it is missing or damaged (a
    header that does not parse, fewer bytes than the header promises, another shape or
    dtype: a truncated file or one from an interrupted copy); a damaged one is recomputed."""
    if not path.is_file():
        return None
    try:
        table = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        table = None
    if table is None or table.shape != shape or table.dtype != np.float32:
        print(f"teacher-output cache {path} is damaged; computing it again", file=sys.stderr)
        return None
    return table


def _write_tables(model: nn.Module, views: list[View], train: Part, folder: Path,
                  shapes: dict[str, tuple], device: torch.device, batch: int = 512) -> None:
    from edgekd.data.stream import as_input, eval_batches

    folder.mkdir(parents=True, exist_ok=True)
    # np.lib.format.open_memmap fills the tables in place, so each is renamed by hand once
    # complete (the same temp-then-rename as edgekd.files.atomic_path).
    # Unique per process and call: two runs sharing the cache (or a benchmark's seeds side by
    # side) may fill the same table at once; each renames a complete one.
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = {v.name: folder / f".{_file_name(v)}.{tag}.tmp" for v in views}
    tables = {v.name: np.lib.format.open_memmap(tmp[v.name], mode="w+", dtype=np.float32,
                                                shape=(len(train), *shapes[v.name]))
              for v in views}
    model.to(device)
    for x, _y, index in eval_batches(train, batch):
        out = compute(model, as_input(x, device), views)
        for name, table in tables.items():
            table[index.numpy()] = out[name].float().cpu().numpy()
    for view in views:
        tables[view.name].flush()
        del tables[view.name]
        with open(tmp[view.name], "rb") as f:  # on disk before it takes the name
            os.fsync(f.fileno())
        tmp[view.name].replace(folder / _file_name(view))
