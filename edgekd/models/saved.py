"""edgekd's own model file (a run's teacher.pt, student.pt): a dict of plain values read with
`weights_only=True`, `{"edgekd_model": 2, "record": ..., "meta": ..., "state_dict": ...}`,
where `record` says how to rebuild the network (edgekd.models.registry.rebuild) and `meta`
describes the data it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.files import atomic_path
from edgekd.models.checkpoints import FILE_VERSION, ModelError, load
from edgekd.models.registry import rebuild


def save_model(model: nn.Module, meta: dict, path: Path) -> None:
    """Save an edgekd Classifier with what rebuilds it (its record) and the data's meta,
    atomically."""
    blob = {"edgekd_model": FILE_VERSION, "record": model.record, "meta": meta,
            "state_dict": model.state_dict()}
    # Through a file object: torch.save names the archive's top folder after a path's file
    # name, and the temporary name would make two saves of the same model differ.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(blob, f)


def load_model(path: Path) -> nn.Module:
    """An edgekd model file back as the Classifier it was saved from (weights_only=True; a
    network from a whole pickled checkpoint is unpickled again only because its record says
    the user trusted it). Raises ModelError for any other file."""
    blob = load(path, "model", trust=False)
    if not isinstance(blob, dict) or blob.get("edgekd_model") != FILE_VERSION:
        raise ModelError(f"model: {path} is not an edgekd model file (version {FILE_VERSION})")
    model = rebuild(blob["record"], blob["meta"])
    model.load_state_dict(blob["state_dict"])
    return model

