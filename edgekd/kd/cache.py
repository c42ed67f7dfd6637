"""Teacher outputs: soft targets and the hinted features a loss needs, per batch.

With a cache directory they are computed once over the training array and stored as .npy
files memory-mapped on read, keyed by a hash of the teacher's weights and of the array, so
every epoch, the baseline's sibling runs and later runs of the same pipeline reuse them.
A view larger than FEATURE_CACHE_BYTES is computed online instead.

Caching is valid only because edgekd trains without random augmentation: a sample's
teacher output never changes. A training loop that augments its inputs must not use it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgekd import parallel
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


def array_key(x: np.ndarray) -> str:
    """Hash of an array's shape, dtype and bytes (16 hex digits)."""
    h = hashlib.sha256(str((x.shape, x.dtype.str)).encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()[:16]


class TeacherOutputs:
    """`outputs(x, idx)` -> {view name: tensor} for a batch of training samples `idx`.

    Cached views are looked up by sample index; the rest come from running the teacher on
    `x`. Without `cache_dir` everything runs online.
    """

    def __init__(self, model: nn.Module, views: list[View], x_train: np.ndarray,
                 cache_dir: Path | None):
        self.model = model.eval()
        self.views = list(dict.fromkeys(views))
        self.tables: dict[str, np.ndarray] = {}
        if cache_dir is not None:
            folder = cache_dir / f"teacher-{model_key(model)}-{array_key(x_train)}"
            self.tables = _cached_tables(model, self.views, x_train, folder)
        self.online = [v for v in self.views if v.name not in self.tables]

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = compute(self.model, x, self.online) if self.online else {}
        rows = idx.numpy()
        for name, table in self.tables.items():
            out[name] = torch.from_numpy(np.ascontiguousarray(table[rows]))
        return out

    def table(self, name: str) -> np.ndarray:
        """A cached view for the whole training array (memory-mapped)."""
        return self.tables[name]


def _file_name(view: View) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", view.name) + ".npy"


def _cached_tables(model: nn.Module, views: list[View], x: np.ndarray,
                   folder: Path) -> dict[str, np.ndarray]:
    """Memory-mapped tables of the views small enough to store, computing missing ones.

    Under torchrun only rank 0 computes and writes; the others wait, then map the files."""
    probe = compute(model, torch.from_numpy(x[:1]), views)
    small = [v for v in views
             if probe[v.name].numel() * 4 * len(x) <= FEATURE_CACHE_BYTES]
    missing = [v for v in small if not (folder / _file_name(v)).is_file()]
    # Every rank takes part in on_leader's barrier, even one that already sees the files.
    parallel.on_leader(lambda: missing and _write_tables(
        model, missing, x, folder, {v.name: probe[v.name].shape[1:] for v in missing}))
    return {v.name: np.load(folder / _file_name(v), mmap_mode="r") for v in small}


def _write_tables(model: nn.Module, views: list[View], x: np.ndarray, folder: Path,
                  shapes: dict[str, tuple], batch: int = 512) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # np.lib.format.open_memmap fills the tables in place, so each is renamed by hand once
    # complete (the same temp-then-rename as edgekd.files.atomic_path).
    tmp = {v.name: folder / f".{_file_name(v)}.tmp" for v in views}
    tables = {v.name: np.lib.format.open_memmap(tmp[v.name], mode="w+", dtype=np.float32,
                                                shape=(len(x), *shapes[v.name]))
              for v in views}
    for i in range(0, len(x), batch):
        out = compute(model, torch.from_numpy(x[i:i + batch]), views)
        for name, table in tables.items():
            table[i:i + batch] = out[name].float().numpy()
    for view in views:
        tables[view.name].flush()
        del tables[view.name]
        tmp[view.name].replace(folder / _file_name(view))
