"""A user's model files: reading weights safely and fitting them to a network.

A user's `weights:` / `checkpoint:` is read with `torch.load(weights_only=True)` (or as
safetensors), which loads tensors and plain containers and never runs code from the file. A
model pickled whole (`torch.save(model)`) can only be unpickled, which runs whatever the file
says: it is refused unless the spec sets `trust_checkpoint: true`. A file that is no PyTorch or
safetensors file, or is damaged, or whose weights hold NaN or inf, is refused with one line.

edgekd's own model file (a run's teacher.pt, student.pt) is read and written by
edgekd.models.saved.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from edgekd.files import kind_problem

FILE_VERSION = 2


class ModelError(ValueError):
    """A model spec cannot be built, or its weights do not fit it. The message starts with the
    spec's field: `weights: ...`, `checkpoint: ...`, `arch: ...`, `module: ...`."""


class Untrusted(ModelError):
    """Weights that only unpickling can read (which runs code from the file), not trusted.
    `path` is the file; the message says how a pipeline trusts it (a command says its own)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class HeadMismatch(ModelError):
    """Weights whose classifier was trained for another number of classes (a teacher's)."""


def read_state(path: Path, field: str, trust: bool = False) -> tuple[dict, dict | None]:
    """The network's state_dict from a weights file, and the input record it was saved with
    (edgekd model files only, else None).

    Takes a state_dict as torch.save or safetensors wrote it, wrapped or not ("state_dict",
    "model", "model_state_dict"), with DDP's `module.` prefix or edgekd's `net.` one, an edgekd
    model file, or with `trust` a whole pickled model (its weights are used). Raises ModelError
    naming `field` and the file, also for weights that hold NaN or inf."""
    if problem := kind_problem(path, "file"):
        raise ModelError(f"{field}: file {path} {problem}")
    state, saved = _read_state(path, field, trust)
    check_finite(state, path, field)
    return state, saved


def _read_state(path: Path, field: str, trust: bool) -> tuple[dict, dict | None]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(path), path, field), None
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{field}: {path} is not a safetensors file, or it is damaged "
                             f"({_first_line(exc)})") from None
    blob = load(path, field, trust)
    if isinstance(blob, nn.Module):
        return blob.state_dict(), None
    if isinstance(blob, dict) and blob.get("edgekd_model") == FILE_VERSION:
        state = {k.removeprefix("net."): v for k, v in blob["state_dict"].items()
                 if k.startswith("net.")}
        return state, {**blob["record"]["input"], "origin": f"saved with the model ({path.name})"}
    if isinstance(blob, dict) and {"state_dict", "config", "meta"} <= blob.keys():
        # An edgekd model file of version 1: the data's normalisation was in `meta`.
        meta = blob["meta"]
        return _unwrap(blob["state_dict"], path, field), {
            "mean": meta["mean"], "std": meta["std"], "origin": f"saved with the model ({path})"}
    return _unwrap(blob, path, field), None


UNPICKLING = ("is not a plain state_dict: loading it means unpickling, which runs code from "
              "the file")


def load(path: Path, field: str, trust: bool):
    """torch.load with weights_only=True; unpickling only with `trust`, else ModelError. A file
    torch.save did not write (neither its zip archive nor its legacy pickle), or one that
    cannot be read back, is a ModelError naming `field` and the file."""
    try:
        written_by = _writer(path)
    except OSError as exc:
        raise ModelError(f"{field}: {path} cannot be read: {exc.strerror}") from None
    if written_by == "pickle":  # torch.load reads it only after running it: refused either way
        raise ModelError(f"{field}: {path} is a plain pickle, not a torch.save file: torch.load "
                         "cannot read it, with or without trust_checkpoint; save it with "
                         "torch.save(model.state_dict(), path)")
    if written_by != "torch":
        raise ModelError(f"{field}: {path} is not a PyTorch file (torch.save writes a zip "
                         "archive), or it is damaged")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            how = "set trust_checkpoint: true" if field == "checkpoint" else \
                f"give it as checkpoint: (not {field}:) with trust_checkpoint: true"
            raise Untrusted(f"{field}: {path} {UNPICKLING}. Save model.state_dict() instead, "
                            f"or, if you trust the file, {how}", path) from None
    except MemoryError:
        raise
    except Exception as exc:  # weights_only runs no code from the file: it is damaged
        raise ModelError(f"{field}: {path} is not a PyTorch file, or it is damaged "
                         f"({_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except MemoryError:
        raise
    except Exception as exc:  # unpickling runs the file's own code: anything can fail
        raise ModelError(f"{field}: {path} cannot be unpickled ({_first_line(exc)}): it is "
                         "damaged, or the classes it was saved with cannot be imported here"
                         ) from None


LEGACY_MAGIC = torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")
"""What the pickle of torch.save's legacy (pre-1.6, non-zip) format starts with, after its
protocol header."""


def _writer(path: Path) -> str:
    """"torch" for a file torch.save could have written (a zip archive, or its legacy pickle,
    whose first object is torch's magic number), "pickle" for another pickle (protocol 2 to
    5), else ""."""
    if zipfile.is_zipfile(path):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(32)
    if len(head) < 2 or head[0] != 0x80 or head[1] not in range(2, 6):
        return ""
    return "torch" if LEGACY_MAGIC in head else "pickle"


def check_finite(state: dict, path: Path, field: str) -> None:
    """ModelError when a floating-point tensor of `state` holds NaN or inf: such a network
    gives NaN logits, and whatever learns from it learns nothing."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        raise ModelError(f"{field}: {path} has {sum(bad.values())} non-finite value(s) (NaN or "
                         f"inf) in {len(bad)} of {len(state)} tensors ({_few(list(bad))}); it "
                         "was saved from a training run that diverged, or it is damaged")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unwrap(blob, path: Path, field: str) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not all(
            isinstance(v, torch.Tensor) for v in blob.values()):
        raise ModelError(f"{field}: {path} holds no state_dict (a dict of tensors)")
    if all(k.startswith("module.") for k in blob):  # saved from DistributedDataParallel
        blob = {k.removeprefix("module."): v for k, v in blob.items()}
    if any(k.startswith("net.") for k in blob):  # saved from an edgekd Classifier
        blob = {k.removeprefix("net."): v for k, v in blob.items() if k.startswith("net.")}
    return blob


def load_whole(path: Path) -> nn.Module:
    """A model saved whole: `torch.save(model)` (unpickled: the spec trusted it) or a
    `torch.export` program (`.pt2`, as its module: frozen, for inference). Raises ModelError
    naming `checkpoint`, also for weights that hold NaN or inf."""
    if problem := kind_problem(path, "file"):
        raise ModelError(f"checkpoint: file {path} {problem}")
    if path.suffix == ".pt2":
        try:
            blob = torch.export.load(path).module()
        except Exception as exc:  # torch raises many kinds for a bad archive
            raise ModelError(f"checkpoint: {path} is not a torch.export program: "
                             f"{type(exc).__name__}: {exc}") from None
    else:
        blob = load(path, "checkpoint", trust=True)
    if not isinstance(blob, nn.Module):
        raise ModelError(f"checkpoint: {path} holds no whole model (found "
                         f"{type(blob).__name__}); for a state_dict give arch: or module: too")
    check_finite(blob.state_dict(), path, "checkpoint")
    return blob


def fit_state(net: nn.Module, state: dict, num_classes: int, replace_head: bool,
              field: str, network: str = "the network") -> list[str]:
    """Load `state` into `net` (in place); returns notes for the report.

    Keys must match exactly, except a classifier trained for another number of classes: with
    `replace_head` the network keeps its fresh head (a note says so), else HeadMismatch naming
    both counts. Any other difference is a ModelError listing the keys. `field` and `network`
    ("arch cnn") name the file and the spec in messages."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    head = [k for k in mismatched if own[k].ndim and own[k].shape[0] == num_classes]
    others = [k for k in mismatched if k not in head]
    if missing or unexpected or others:
        parts = [f"{label} {_few(keys)}" for label, keys in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("keys of another shape", [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                       for k in others])) if keys]
        raise ModelError(f"{field} does not fit {network}: {'; '.join(parts)}")
    notes = []
    if head:
        outputs = state[head[0]].shape[0]
        if not replace_head:
            raise HeadMismatch(
                f"{field} does not fit {network}: its classifier ({head[0].rsplit('.', 1)[0]}) "
                f"has {outputs} outputs, "
                f"the data has {num_classes} classes; a teacher must be trained for the data's "
                "classes (or set reset_head: true and a train: block to fine-tune a new head)")
        state = {**state, **{k: own[k] for k in head}}
        notes.append(f"classifier replaced: {head[0].rsplit('.', 1)[0]} had {outputs} outputs, "
                     f"the data has {num_classes} classes (the new head starts at random)")
    net.load_state_dict(state)
    return notes


def fit_outputs(net: nn.Module, channels: int, size: tuple[int, int], num_classes: int,
                replace_head: bool, field: str) -> list[str]:
    """For a network built or loaded whole: check on one zero input (channels x size) that it
    gives `num_classes` outputs; replace its last nn.Linear when it does not and
    `replace_head`, else HeadMismatch. Returns notes."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, channels, *size))
    except Exception as exc:  # the user's network: any error means the input does not fit
        raise ModelError(f"{field}: the network fails on a 1 x {channels} x {size[0]} x "
                         f"{size[1]} input ({type(exc).__name__}: {exc}); set input: channels "
                         "/ size to what it takes") from None
    finally:
        net.train(was)
    out = getattr(out, "logits", out)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelError(f"{field}: the network must return logits N x classes, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
    outputs = out.shape[1]
    if outputs == num_classes:
        return []
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not replace_head or not linears:
        why = "" if linears else " and has no nn.Linear classifier to replace"
        raise HeadMismatch(f"{field}: the network has {outputs} outputs, the data has "
                           f"{num_classes} classes{why}")
    name, last = linears[-1]
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr,
            nn.Linear(last.in_features, num_classes, bias=last.bias is not None))
    return [f"classifier replaced: {name} had {outputs} outputs, the data has {num_classes} "
            "classes (the new head starts at random)"]


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
