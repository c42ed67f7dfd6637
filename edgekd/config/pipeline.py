"""One pipeline file: data, teacher, student, target device and stages in order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from edgekd.budgets import ExportBudget
from edgekd.config.data import DataConfig
from edgekd.config.distill import DistillStage
from edgekd.config.models import ModelConfig, TeacherConfig
from edgekd.config.stages import ExportStage, ProfileStage, QuantizeStage
from edgekd.export.formats import FORMATS, RUNTIMES
from edgekd.schema import NAME_MAX_BYTES, Strict, did_you_mean, parse, path_problem, read_yaml

Stage = Annotated[
    Union[DistillStage, QuantizeStage, ExportStage, ProfileStage],  # noqa: UP007
    Field(discriminator="kind"),
]
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+|mps)$"
"""What `device:` and `--device` take."""
STAGE_KINDS = ("distill", "quantize", "export", "profile")
"""The stage kinds a pipeline's `stages:` list takes, in the order they must run."""


class Pipeline(Strict):
    """One pipeline file: data, teacher, student, target device and stages in order."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Names the run directory (runs/<name>), so at most NAME_MAX_BYTES."""
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seeds the splits, the initial weights and the training order (numpy and torch take
    0 .. 2**32 - 1)."""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: ModelConfig
    target: str = "local"
    """A device profile shipped with edgekd (`edgekd devices` lists them) or a path to a device
    YAML."""
    on_unreachable: Literal["fail", "estimate"] = "fail"
    device: str = "auto"
    """Where training runs (teacher, distill, QAT): auto (CUDA when present, else the CPU),
    cpu, cuda, cuda:N or mps. Export and profiling run on the CPU (and the target)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training arithmetic (torch.autocast): auto is bf16 on GPUs that support it, else fp32;
    fp16 adds a gradient scaler. Weights stay fp32."""
    compile: bool = False
    """torch.compile the trained model (slower start, faster steps on GPUs)."""
    stages: list[Stage]

    @model_validator(mode="after")
    def _stage_order(self) -> Pipeline:
        kinds = [s.kind for s in self.stages]
        order = [k for k in STAGE_KINDS if k in kinds]
        if kinds != order:
            raise ValueError(f"stages: must run in the order {', '.join(STAGE_KINDS)}; got "
                             f"{', '.join(kinds)}")
        needs = {"quantize": "distill", "export": "distill", "profile": "export"}
        for kind, before in needs.items():
            if kind in kinds and before not in kinds:
                raise ValueError(f"stages: a {kind} stage needs a {before} stage before it")
        export = self.stage("export")
        int8 = [f for f in (export.formats if export else []) if FORMATS[f].precision == "int8"]
        if int8 and "quantize" not in kinds:
            raise ValueError(f"stages: export formats {', '.join(int8)} need a quantize stage")
        return self

    @model_validator(mode="after")
    def _budget_artifacts_exist(self) -> Pipeline:
        """Every name in a budget's `artifacts:` is an artifact the export stage writes."""
        export = self.stage("export")
        written = [FORMATS[f].artifact for f in export.formats] if export else []
        for i, stage in enumerate(self.stages):
            named = getattr(stage.budget, "artifacts", None)
            unknown = [name for name in named or [] if name not in written]
            if unknown:
                names = ", ".join(f"{name!r}{did_you_mean(name, written)}" for name in unknown)
                raise ValueError(
                    f"stages[{i}].budget.artifacts: {names} "
                    f"{'is not an artifact' if len(unknown) == 1 else 'are not artifacts'} "
                    f"this pipeline exports; it exports {', '.join(written) or 'none'}")
            gated = [FORMATS[f] for f in FORMATS
                     if FORMATS[f].artifact in (named if named is not None else written)]
            for field, applies, which in _PARTIAL_LIMITS:
                if getattr(stage.budget, field, None) is not None and \
                        not any(applies(f) for f in gated):
                    raise ValueError(
                        f"stages[{i}].budget.{field}: it gates {which}, and none of "
                        f"{', '.join(f.artifact for f in gated) or 'no artifacts'} is one, so "
                        "it would check nothing")
        return self

    @field_validator("name")
    @classmethod
    def _fits_a_file_name(cls, name: str) -> str:
        size = len(name.encode())
        if size > NAME_MAX_BYTES:
            raise ValueError(f"too long ({size} bytes): it names the run directory runs/<name>, "
                             f"and a file name is at most {NAME_MAX_BYTES} bytes")
        return name

    @field_validator("target")
    @classmethod
    def _fits_a_path(cls, target: str) -> str:
        if path_problem(target):  # a profile name or a device YAML's path
            raise ValueError(path_problem(target))
        return target

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device_problem(device):
            raise ValueError(device_problem(device))
        return device

    @model_validator(mode="after")
    def _no_cache_with_augmentation(self) -> Pipeline:
        """A cached teacher output belongs to one stored image; augmented images are new."""
        for i, stage in enumerate(self.stages):
            augment = getattr(stage, "augment", None) or self.data.augment
            if getattr(stage, "cache_teacher", None) and augment.random:
                raise ValueError(
                    f"stages[{i}].cache_teacher: cannot cache teacher outputs when the training "
                    f"data is augmented ({_describe(augment)}): each "
                    "epoch sees new images, so the teacher must run on every batch; remove "
                    "cache_teacher or set augment: none")
        return self

    def profiled_suffixes(self) -> tuple[str, ...]:
        """The suffixes of the files the profile stage measures on the target (none when the
        pipeline has no profile stage): the target must have a way to run each."""
        export = self.stage("export")
        if self.stage("profile") is None or export is None:
            return ()
        return tuple(dict.fromkeys(FORMATS[f].suffix for f in export.formats
                                   if FORMATS[f].deployable))

    def stage(self, kind: str) -> Any:
        """The stage config of `kind`, or None when the pipeline has none."""
        return next((s for s in self.stages if s.kind == kind), None)

    def budget(self, kind: str) -> Any:
        """The budget stage `kind` is gated on: its own, except that the quantize stage's
        `max_accuracy_drop` also gates each int8 file at export (the files that ship) unless
        the export budget sets its own."""
        budget = getattr(self.stage(kind), "budget", None)
        drop = getattr(getattr(self.stage("quantize"), "budget", None), "max_accuracy_drop",
                       None)
        if kind != "export" or drop is None:
            return budget
        if budget is None:
            return ExportBudget(max_accuracy_drop=drop)
        if budget.max_accuracy_drop is None:
            return budget.model_copy(update={"max_accuracy_drop": drop})
        return budget


_PARTIAL_LIMITS = (
    ("min_delegated_ops", lambda f: RUNTIMES[f.runtime].delegates,
     ".pte (ExecuTorch) and .tflite (LiteRT) files, which run a delegate"),
    ("min_int8_speedup", lambda f: f.precision == "int8", "int8 files"),
    ("max_accuracy_drop", lambda f: f.precision == "int8", "int8 files"),
)
"""Per-file limits that apply to some files only: (budget field, applies to the format?,
which files, in words). Gating only files they do not apply to is a config error."""


def device_problem(device: str) -> str | None:
    """What is wrong with a `device:` / `--device` value, or None when it is one we take."""
    if re.match(DEVICE_PATTERN, device):
        return None
    return f"{device!r} is not auto, cpu, cuda, cuda:N or mps"


def _describe(augment) -> str:
    parts = [f"{augment.preset} preset"] if augment.preset != "none" else []
    parts += [name for name in ("mixup", "cutmix") if getattr(augment, name)]
    return ", ".join(parts)


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file (schema only; the target device is checked by
    edgekd.devices.profiles.check_target). Raises ConfigError with every problem."""
    path = Path(path)
    return parse(Pipeline, read_yaml(path), str(path))
