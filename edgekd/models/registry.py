"""The model registry: a model spec (edgekd.config.ModelConfig) -> a Classifier, whatever the
source. Teacher, student, assistants, extra teachers and the mutual peer are all built here.

    source        network                                       its own input (when pretrained)
    cnn           edgekd.models.builders.cnn                    -
    torchvision   torchvision.models.get_model(name)            -
    timm          timm.create_model(name)                       pretrained_cfg mean / std
    hf            AutoModelForImageClassification (local dir)   preprocessor_config.json
    module        the user's function (file.py:fn or pkg.mod:fn) -
    checkpoint    a whole pickled model or a .pt2 program       -

Each source is one entry of SOURCES: a function building the network for a number of classes
and input channels (`weights=None`: random init), plus, for timm and Hugging Face, the input
the pretrained network expects. Weights files are read by edgekd.models.checkpoints. Nothing
is downloaded: timm and torchvision build without weights, Hugging Face reads its directory
with `local_files_only`.

Every built model records how it was built (`Classifier.record`: the spec with absolute paths,
the resolved input, notes), which edgekd.models.checkpoints saves so any stage rebuilds it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from edgekd.config.models import ModelConfig, split_arch
from edgekd.files import kind_problem
from edgekd.models import checkpoints
from edgekd.models.builders import Classifier, cnn
from edgekd.models.checkpoints import HeadMismatch, ModelError
from edgekd.schema import did_you_mean

Role = Literal["teacher", "student"]


@dataclass(frozen=True)
class Source:
    """One way of getting a network."""

    build: Callable[[ModelConfig, int, int, Path], nn.Module]
    """build(spec, num_classes, channels, base_dir) -> the network with random weights (or,
    for hf and whole checkpoints, the weights they hold)."""
    default_channels: int | None
    """Channels the network takes when the spec does not say (None: the data's)."""
    pretrained_input: Callable[[nn.Module, ModelConfig, Path], dict] | None = None
    """The input a pretrained network of this source expects (mean, std, range, size)."""


def _cnn(spec: ModelConfig, num_classes: int, channels: int, _base: Path) -> nn.Module:
    return cnn(num_classes, channels, width=spec.width or 16, depth=spec.depth or 2)


def _torchvision(spec: ModelConfig, num_classes: int, channels: int, _base: Path) -> nn.Module:
    import torchvision

    name = split_arch(spec.arch)[1]
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ModelError(f"arch: unknown torchvision classification model {name!r}"
                         f"{did_you_mean(name, names)}")
    if channels != 3:
        raise ModelError("input.channels: torchvision models take 3 channels")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _timm(spec: ModelConfig, num_classes: int, channels: int, _base: Path) -> nn.Module:
    import timm

    name = split_arch(spec.arch)[1]
    if not timm.is_model(name):
        raise ModelError(f"arch: unknown timm model {name!r}"
                         f"{did_you_mean(name, timm.list_models())}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)


def _timm_input(net: nn.Module, _spec: ModelConfig, _base: Path) -> dict:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "origin": "timm pretrained_cfg"} \
        if "mean" in cfg and "std" in cfg else {}


def hf_directory(spec: ModelConfig, base: Path) -> Path:
    """The directory of an `hf:` spec, resolved against the pipeline's folder."""
    path = _resolve(Path(split_arch(spec.arch)[1]), base)
    if not (path / "config.json").is_file():
        raise ModelError(f"arch: {path} is not a Hugging Face model directory (no config.json; "
                         "save one with model.save_pretrained(directory))")
    return path


def _hf(spec: ModelConfig, num_classes: int, channels: int, base: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModelForImageClassification

    path = hf_directory(spec, base)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if getattr(config, "num_channels", channels) != channels:
        raise ModelError(f"input.channels: {path} takes {config.num_channels} channels")
    stored = config.num_labels
    if stored != num_classes and not spec.reset_head:
        raise HeadMismatch(f"arch: {path}: its classifier has {stored} outputs, the "
                                       f"data has {num_classes} classes")
    with _quiet_transformers():
        return AutoModelForImageClassification.from_pretrained(
            path, local_files_only=True, num_labels=num_classes,
            ignore_mismatched_sizes=stored != num_classes)


def _hf_input(_net: nn.Module, spec: ModelConfig, base: Path) -> dict:
    processor = hf_directory(spec, base) / "preprocessor_config.json"
    if not processor.is_file():
        return {}
    cfg = json.loads(processor.read_text())
    out: dict = {"origin": f"{processor.name}"}
    if cfg.get("do_normalize", True) and "image_mean" in cfg and "image_std" in cfg:
        out["mean"], out["std"] = list(cfg["image_mean"]), list(cfg["image_std"])
    if cfg.get("do_rescale", True) is False:
        out["range"] = (0.0, 255.0)  # the model reads unscaled 0-255 pixel values
    size = cfg.get("size") or {}
    if isinstance(size, dict) and "height" in size and "width" in size:
        out["size"] = (size["height"], size["width"])
    return out


def _module(spec: ModelConfig, num_classes: int, _channels: int, base: Path) -> nn.Module:
    function = load_function(spec.module, base)
    kwargs = dict(spec.kwargs)
    if "num_classes" in inspect.signature(function).parameters:
        kwargs.setdefault("num_classes", num_classes)
    try:
        net = function(**kwargs)
    except TypeError as exc:
        raise ModelError(f"module: {spec.module}: {exc}") from None
    except SystemExit as exc:  # it would end edgekd with its code (0: a "pass" with no report)
        raise ModelError(f"module: {spec.module} called sys.exit({exc.code!r}) instead of "
                         "returning a network") from None
    except Exception as exc:  # noqa: BLE001 - the user's code failed: their input, exit 2
        raise ModelError(f"module: {spec.module} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"module: {spec.module} returned {type(net).__name__}, not an nn.Module")
    return net


def _whole(spec: ModelConfig, _num_classes: int, _channels: int, base: Path) -> nn.Module:
    return checkpoints.load_whole(_resolve(spec.checkpoint, base))


SOURCES: dict[str, Source] = {
    "cnn": Source(_cnn, None),
    "torchvision": Source(_torchvision, 3),
    "timm": Source(_timm, 3, _timm_input),
    "hf": Source(_hf, 3, _hf_input),
    "module": Source(_module, None),
    "checkpoint": Source(_whole, None),
}


def build(spec: ModelConfig, meta: dict, base: Path = Path("."), role: Role = "student"
          ) -> Classifier:
    """The model `spec` names for data described by `meta` (num_classes, input_shape, mean,
    std: edgekd.data.Splits.meta), with its weights when the spec gives a file, wrapped with
    its input adapter. Random weights are drawn from torch's generator as it stands (the
    caller seeds it). Paths are relative to `base` (the pipeline's folder).

    A classifier trained for another number of classes is replaced for a student (and for a
    teacher with `reset_head`); otherwise HeadMismatch. Raises ModelError naming the field for
    a spec or file that cannot be built or loaded."""
    num_classes = meta["num_classes"]
    source = SOURCES[spec.source]
    state, saved, label = None, None, ""
    file = spec.weights if spec.weights is not None else spec.checkpoint
    if file is not None and spec.source != "checkpoint":
        field = "weights" if spec.weights is not None else "checkpoint"
        path = _resolve(file, base)
        label = f"{field}: {file}"
        state, saved = checkpoints.read_state(path, field, spec.trust_checkpoint)
    channels = _channels(spec, source, meta, saved)
    net = source.build(spec, num_classes, channels, base)
    if spec.source in ("module", "checkpoint") and not (spec.input and spec.input.channels):
        channels = _first_conv_channels(net) or channels
    notes: list[str] = []
    replace = role == "student" or spec.reset_head
    if state is not None:
        network = f"module {spec.module}" if spec.module else f"arch {spec.arch}"
        notes += checkpoints.fit_state(net, state, num_classes, replace, label, network)
    elif spec.source in ("module", "checkpoint"):
        size = spec.input.size if spec.input and spec.input.size else meta["input_shape"][1:]
        label = f"checkpoint: {_resolve(spec.checkpoint, base)}" \
            if spec.source == "checkpoint" else f"module: {spec.module}"
        notes += checkpoints.fit_outputs(net, channels, tuple(size), num_classes, replace, label)
    input = resolve_input(spec, net, meta, base, channels, saved)
    record = {"spec": portable_spec(spec, base), "input": input, "notes": notes,
              "head_replaced": any(n.startswith("classifier replaced") for n in notes),
              "trusted": spec.trust_checkpoint}
    return Classifier(net, input, record)


def rebuild(record: dict, meta: dict) -> Classifier:
    """The model a saved record describes, with random weights (the caller loads the saved
    state): same network, same input adapter."""
    spec = ModelConfig.model_validate(record["spec"])
    source = SOURCES[spec.source]
    channels = record["input"]["channels"]
    if spec.source == "hf":
        spec = spec.model_copy(update={"reset_head": True})  # rebuilt at the data's classes
    net = source.build(spec, meta["num_classes"], channels, Path("/"))
    if record.get("head_replaced") and spec.source in ("module", "checkpoint"):
        checkpoints.fit_outputs(net, channels, tuple(record["input"]["size"]),
                                meta["num_classes"], True, spec.source)
    return Classifier(net, record["input"], record)


def describe(model: Classifier) -> dict:
    """What the report says about how a model was built: its input (normalisation and where
    it came from, size, channels), notes (a replaced head) and whether its file was trusted."""
    record = model.record
    spec, inp = record["spec"], record["input"]
    info = {"source": spec.get("arch") or spec.get("module") or spec.get("checkpoint"),
            "input": f"mean {_short(inp['mean'])} std {_short(inp['std'])} in "
                     f"{list(inp['range'])}, {inp['channels']} channel(s), "
                     f"{inp['size'][0]}x{inp['size'][1]} ({inp['origin']})"}
    if record["notes"]:
        info["notes"] = list(record["notes"])
    if record.get("trusted"):
        info["trusted_checkpoint"] = spec.get("checkpoint", True)
    return info


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def _channels(spec: ModelConfig, source: Source, meta: dict, saved: dict | None) -> int:
    if spec.input is not None and spec.input.channels is not None:
        return spec.input.channels
    if saved is not None and "channels" in saved:
        return saved["channels"]
    return source.default_channels or meta["in_channels"]


def _first_conv_channels(net: nn.Module) -> int | None:
    """The input channels of a network's first convolution (None when it has none)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


def resolve_input(spec: ModelConfig, net: nn.Module, meta: dict, base: Path, channels: int,
                  saved: dict | None = None) -> dict:
    """The input record of a model (InputAdapter's argument): what comes in (the data's
    channels and size) and what the network expects, each field from, in order, the spec's
    `input:`, the saved edgekd file it was trained in, the source's pretrained config, the
    data's statistics (a model trained here from scratch) or nothing (weights made
    elsewhere with no stated normalisation: raw pixels, and a note says so)."""
    given = spec.input.model_dump(exclude_unset=True) if spec.input is not None else {}
    source = SOURCES[spec.source]
    inherited = saved or {}
    if not inherited and spec.pretrained and source.pretrained_input is not None:
        inherited = source.pretrained_input(net, spec, base)
    size_in = tuple(meta["input_shape"][1:])
    out = {"channels_in": meta["in_channels"], "channels": channels, "size_in": size_in,
           "size": tuple(given.get("size") or inherited.get("size") or size_in),
           "channel_order": given.get("channel_order", inherited.get("channel_order", "rgb")),
           "range": tuple(given.get("range", inherited.get("range", (0.0, 1.0))))}
    if "mean" in given:
        out.update(mean=given["mean"], std=given["std"], origin="stated in input:")
    elif "mean" in inherited:
        out.update(mean=inherited["mean"], std=inherited["std"],
                   origin=inherited.get("origin", "saved with the model"))
    elif not spec.pretrained:
        out.update(mean=meta["mean"], std=meta["std"], origin="data statistics")
    else:
        out.update(mean=[0.0], std=[1.0], origin=(
            "none: its weights come from elsewhere and state no normalisation (raw pixels in "
            f"{list(out['range'])}); set input: mean/std if it was trained with one"))
    out["mean"], out["std"] = _per_channel(out["mean"], channels), _per_channel(out["std"],
                                                                                channels)
    return out


def _per_channel(values: list[float], channels: int) -> list[float]:
    """Statistics of grey data for a 3-channel network (or one value for all): repeated;
    RGB statistics for a grey network: averaged."""
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    if channels == 1:
        return [sum(values) / len(values)]
    raise ModelError(f"input.mean: {len(values)} values for a network taking {channels} "
                     "channels")


def portable_spec(spec: ModelConfig, base: Path) -> dict:
    """The spec as a saved file records it: paths absolute, weights left out (the file holds
    them), a whole checkpoint kept (the network comes from it)."""
    fields = set(ModelConfig.model_fields) - {"weights", "input", "reset_head"}
    out = spec.model_dump(mode="json", exclude_defaults=True, include=fields)
    if spec.source != "checkpoint":
        out.pop("checkpoint", None)
        out.pop("trust_checkpoint", None)
    else:
        out["checkpoint"] = str(_resolve(spec.checkpoint, base))
    if spec.source == "hf":
        out["arch"] = f"hf:{hf_directory(spec, base)}"
    if spec.source == "module":
        target, _, function = spec.module.rpartition(":")
        if target.endswith(".py"):
            out["module"] = f"{_resolve(Path(target), base)}:{function}"
    return out


def load_function(module: str, base: Path) -> Callable:
    """The function `file.py:function` (relative to `base`) or `package.module:function`
    names. Raises ModelError naming the file or module and the function."""
    target, _, name = module.rpartition(":")
    if target.endswith(".py"):
        path = _resolve(Path(target), base)
        if problem := kind_problem(path, "file"):
            raise ModelError(f"module: file {path} {problem}")
        key = f"edgekd_user_{abs(hash(str(path)))}"
        if key not in sys.modules:
            loader = importlib.util.spec_from_file_location(key, path)
            mod = importlib.util.module_from_spec(loader)
            sys.path.insert(0, str(path.parent))  # its own sibling imports
            try:
                loader.loader.exec_module(mod)
            except (Exception, SystemExit) as exc:
                raise ModelError(f"module: {path} failed to import: "
                                 f"{type(exc).__name__}: {exc}") from None
            finally:
                sys.path.remove(str(path.parent))
            sys.modules[key] = mod
        mod = sys.modules[key]
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            raise ModelError(f"module: cannot import {target!r}: {exc}") from None
    function = getattr(mod, name, None)
    if not callable(function):
        names = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        raise ModelError(f"module: {target} has no function {name!r}{did_you_mean(name, names)}")
    return function


def _resolve(path: Path, base: Path) -> Path:
    """`path` against `base` (the pipeline's folder), absolute: saved records are rebuilt
    from another working directory."""
    path = Path(path).expanduser()
    return (path if path.is_absolute() else base / path).absolute()


class _quiet_transformers:
    """Silence transformers' load report (it prints which weights were re-initialised; edgekd
    records that as a note)."""

    def __enter__(self):
        from transformers.utils import logging

        self._level, self._bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *_exc):
        from transformers.utils import logging

        logging.set_verbosity(self._level)
        if self._bars:
            logging.enable_progress_bar()
