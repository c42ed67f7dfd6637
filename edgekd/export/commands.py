"""`edgekd check-model`: check that a student survives export before training it.

Exit codes: 0 every step passed, 2 usage error or a step that failed (one line on stderr).
Imports nothing heavy until the command runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from edgekd import exits
from edgekd.console import fit
from edgekd.export.formats import FORMAT_NAMES
from edgekd.schema import ConfigError

MAX_INPUT_CHANNELS = 64
"""The most channels `--input-shape` takes (sides are bounded by MAX_IMAGE_SIDE)."""


def _usage(lines: list[str]) -> None:
    for line in lines:
        click.echo(fit(line), err=True)
    sys.exit(exits.USAGE)


def _formats_option(_ctx, _param, value: str | None) -> list[str]:
    from edgekd.export.formats import missing_runtime
    from edgekd.schema import did_you_mean

    if value is None:  # every format whose runtime is installed (.pte needs an extra)
        return [name for name in FORMAT_NAMES if missing_runtime(name) is None]
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        if name not in FORMAT_NAMES:
            raise click.BadParameter(f"unknown format {name!r}{did_you_mean(name, FORMAT_NAMES)}"
                                     f"; give {', '.join(FORMAT_NAMES)}")
        if missing_runtime(name):
            raise click.BadParameter(missing_runtime(name))
    return names


def _shape_option(_ctx, _param, value: str) -> tuple[int, int, int]:
    """CxHxW, each side at most MAX_IMAGE_SIDE (as data.image_size), C at most
    MAX_INPUT_CHANNELS: a larger input is a memory error, not a check."""
    from edgekd.config.data import MAX_IMAGE_SIDE

    parts = value.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        _usage([f"check-model: --input-shape {value}: give CxHxW, e.g. 3x64x64"])
    shape = tuple(int(p) for p in parts)
    if shape[0] > MAX_INPUT_CHANNELS or max(shape[1:]) > MAX_IMAGE_SIDE:
        _usage([f"check-model: --input-shape {value}: at most {MAX_INPUT_CHANNELS} channels "
                f"and {MAX_IMAGE_SIDE} pixels a side"])
    return shape


def _kwargs_option(_ctx, _param, values: tuple[str, ...]) -> dict:
    import yaml

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{item!r}: give key=value, e.g. width=32")
        out[key] = yaml.safe_load(raw) if raw else ""
    return out


def _model_fields(spec: str, kwargs: dict, weights: Path | None, trust: bool) -> dict:
    """SPEC as ModelConfig fields: `file.py:function` and `package.module:function` are a
    module, anything else (cnn, resnet18, timm:name, hf:dir) an arch. Trusted weights are a
    `checkpoint:` with `trust_checkpoint: true`, as a pipeline would give them."""
    from edgekd.config.models import SOURCES

    module = ".py:" in spec or (":" in spec and spec.partition(":")[0] not in SOURCES)
    fields: dict = {"module": spec} if module else {"arch": spec}
    if kwargs:
        fields["kwargs"] = kwargs
    if weights is not None:
        fields["checkpoint" if trust else "weights"] = str(weights)
    if trust:
        fields["trust_checkpoint"] = True
    return fields


@click.command("check-model")
@click.argument("spec")
@click.option("--formats", default=None, show_default="every format whose runtime is installed",
              callback=_formats_option, help="Comma-separated export formats to convert to.")
@click.option("--quantize", type=click.Choice(["qat", "ptq", "none"]), default="qat",
              show_default=True, help="The pipeline's quantize method (none: no int8).")
@click.option("--input-shape", default="3x64x64", show_default=True, callback=_shape_option,
              help="One input as CxHxW.")
@click.option("--classes", type=click.IntRange(min=2, max=100_000), default=10,
              show_default=True)
@click.option("--kwarg", "kwargs", multiple=True, callback=_kwargs_option,
              help="key=value for a module function (YAML value); repeatable.")
@click.option("--weights", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A state_dict to load (exportability does not depend on it).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow --weights to be unpickled (a "
              "model saved whole): runs code from the file, as trust_checkpoint: true does.")
@click.option("--opset", type=click.IntRange(min=13), default=18, show_default=True)
def check_model_command(spec: str, formats: list[str], quantize: str,
                        input_shape: tuple[int, int, int], classes: int, kwargs: dict,
                        weights: Path | None, trust_checkpoint: bool, opset: int) -> None:
    """Check that a student survives torch.export, int8 quantization and conversion to each
    format, on its untrained weights, as the distill stage does before training.

    SPEC is an arch (cnn, resnet18, timm:resnet10t, hf:DIR) or a module function
    (my_models.py:build_student, package.module:function). Exit 2 names the format and the op
    or module that failed (EDGEKD_VERBOSE=1 also prints the converter's whole error)."""
    from edgekd.export.check import NotExportable, check
    from edgekd.export.formats import FORMATS

    method = None if quantize == "none" else quantize
    int8 = [f for f in formats if FORMATS[f].precision == "int8"]
    if int8 and method is None:
        _usage([f"check-model: --formats {int8[0]} needs --quantize qat or ptq"])
    if trust_checkpoint and weights is None:
        _usage(["check-model: --trust-checkpoint: there is no --weights file to trust"])
    fields = _model_fields(spec, kwargs, weights, trust_checkpoint)
    model = _build_for_check(spec, fields, input_shape, classes)
    try:
        result = check(model, input_shape, formats, method, opset,
                       log=lambda step, s: click.echo(f"  {step:<18} {s:6.1f} s  OK"))
    except NotExportable as exc:
        if os.environ.get("EDGEKD_VERBOSE"):
            click.echo(fit(exc.detail), err=True)
        _usage([str(exc)])
    click.echo(f"ok: {spec} exports to {', '.join(formats) or 'torch.export'} "
               f"({result['seconds']:.1f} s)")


def _build_for_check(spec: str, fields: dict, input_shape: tuple[int, int, int],
                     classes: int):
    """The model SPEC names, for random data of `input_shape` (mean 0.5, std 0.25); exit 2
    with one line when the spec is wrong. Its messages name check-model's own flags."""
    import torch

    from edgekd.config.models import ModelConfig
    from edgekd.models import ModelError, Untrusted, build
    from edgekd.models.checkpoints import UNPICKLING
    from edgekd.schema import parse

    channels = input_shape[0]
    meta = {"num_classes": classes, "in_channels": channels, "input_shape": list(input_shape),
            "mean": [0.5] * channels, "std": [0.25] * channels}
    torch.manual_seed(0)
    try:
        return build(parse(ModelConfig, fields, "check-model"), meta, Path.cwd())
    except ConfigError as exc:
        _usage(exc.lines)
    except Untrusted as exc:
        _usage([f"check-model: --weights {exc.path} {UNPICKLING}. Save model.state_dict() "
                "instead, or, if you trust the file, add --trust-checkpoint"])
    except ModelError as exc:
        _usage([f"check-model: {exc}"])
