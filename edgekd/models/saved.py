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


def load_model(path: Path, named: list[dict] = ()) -> nn.Module:
    """An edgekd model file back as the Classifier it was saved from (weights_only=True).
    Its record says how to rebuild the network; a record that would read anything beyond the
    file (import a `module:`, unpickle a trusted `checkpoint:`, open an `hf:` directory) is
    followed only when it is one of `named`, the portable specs (registry.portable_spec) of
    the models the running pipeline names: the file itself is data, and a run directory made
    elsewhere must not decide what code runs here. Raises ModelError for any other file or
    record (`check_model_file`)."""
    blob = check_model_file(path, named)
    model = rebuild(blob["record"], blob["meta"])
    model.load_state_dict(blob["state_dict"])
    return model


def check_model_file(path: Path, named: list[dict] = ()) -> dict:
    """The contents of edgekd model file `path` when `load_model` may rebuild it from what
    `named` allows; ModelError naming the file otherwise. Reads it (weights_only=True), runs
    nothing from it."""
    blob = load(path, "model", trust=False)
    if not isinstance(blob, dict) or blob.get("edgekd_model") != FILE_VERSION:
        raise ModelError(f"model: {path} is not an edgekd model file (version {FILE_VERSION})")
    record = blob.get("record")
    spec = record.get("spec") if isinstance(record, dict) else None
    if not isinstance(spec, dict) or not isinstance(blob.get("meta"), dict):
        raise ModelError(f"model: {path} is not an edgekd model file (no record of its network)")
    reads = {"module", "checkpoint"} & set(spec) or \
        ({"arch"} if str(spec.get("arch", "")).startswith("hf:") else set())
    if reads and _canonical(spec) not in {_canonical(n) for n in named}:
        what = ", ".join(f"{k}: {str(spec[k])[:200]}" for k in sorted(reads))
        raise ModelError(f"model: {path} would be rebuilt from {what}, which this pipeline does "
                         "not name; edgekd follows such a record only for the pipeline's own "
                         "models (a run directory made elsewhere?): remove the file, or rerun "
                         "with --force")
    return blob


def _canonical(spec: dict) -> str:
    import json

    return json.dumps(spec, sort_keys=True, default=str)
