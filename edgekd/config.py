"""Pipeline configuration: pydantic models with unknown keys forbidden, and `load_pipeline`.

Every error in a file is reported at once, one line each, naming the file and the field path:
`pipelines/mobile.yaml: stages[1].budget.max_acuracy_drop: unknown key (did you mean
max_accuracy_drop?)`. Nothing here imports torch, so `edgekd validate` is instant.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.budgets import parse_duration_ms, parse_size

# Architectures edgekd can build. Kept as names here so validation needs no torch import;
# edgekd.models.build() maps them to builders and a test checks the two agree.
CNN_ARCHS = ("cnn",)
TORCHVISION_ARCHS = (
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34",
    "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "efficientnet_b0",
    "squeezenet1_1", "mnasnet0_5",
)
ARCHS = CNN_ARCHS + TORCHVISION_ARCHS
Percentile = Literal["mean", "p50", "p90", "p99"]


class ConfigError(Exception):
    """A configuration file is wrong; `lines` holds one message per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Split(Strict):
    """Fractions of the data held out for validation and test (stratified, seeded)."""

    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.25, gt=0, lt=0.5)


class DataConfig(Strict):
    """Where the samples come from and how they are shaped."""

    source: Literal["digits", "folder", "npz"] = "digits"
    path: Path | None = None
    """Image folder (one subfolder per class) or .npz file with arrays `x` and `y`."""
    image_size: tuple[int, int] | None = None
    """(height, width) every image is resized to; folder data needs it."""
    channels: Literal[1, 3] | None = None
    """Colour channels of folder images (1 grey, 3 RGB); default 3."""
    split: Split = Split()

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataConfig:
        if self.source == "digits" and self.path is not None:
            raise ValueError("path: the built-in digits data takes no path")
        if self.source != "digits" and self.path is None:
            raise ValueError(f"path: required for source {self.source!r}")
        if self.source == "folder" and self.image_size is None:
            raise ValueError("image_size: required for folder data, e.g. [32, 32]")
        return self


class TrainConfig(Strict):
    """Plain supervised training (used for a teacher the pipeline trains itself)."""

    epochs: int = Field(20, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)


class ModelConfig(Strict):
    """A network: `cnn` (width / depth knobs) or a torchvision architecture by name."""

    arch: str
    width: int | None = Field(None, ge=1)
    """Channels of the first CNN block; each later block doubles it (cnn only)."""
    depth: int | None = Field(None, ge=1, le=6)
    """Number of conv blocks (cnn only)."""
    checkpoint: Path | None = None
    """A state_dict or a fully saved model (torch.save(model)) to start from."""

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}{_did_you_mean(arch, ARCHS)}")
        return arch

    @model_validator(mode="after")
    def _knobs_for_cnn_only(self) -> ModelConfig:
        if self.arch not in CNN_ARCHS and (self.width or self.depth):
            raise ValueError("width/depth: only the cnn family takes width and depth")
        return self


class TeacherConfig(ModelConfig):
    """The teacher: a checkpoint to load, or `train:` to have the pipeline train it."""

    train: TrainConfig | None = None

    @model_validator(mode="after")
    def _checkpoint_or_train(self) -> TeacherConfig:
        if (self.checkpoint is None) == (self.train is None):
            raise ValueError("teacher: give exactly one of checkpoint or train")
        return self


class Budget(Strict):
    """Limits a stage must meet; a failed one stops the run (exit 3) unless --no-gate."""

    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Accuracy lost against the previous stage (fp32 student -> int8)."""
    min_teacher_retention: float | None = Field(None, ge=0)
    """Student accuracy / teacher accuracy, e.g. 0.97."""
    max_latency_ms: float | str | dict[Percentile, float | str] | None = None
    """A number or "100 ms" limits p90; a map limits each percentile named."""
    max_peak_memory: str | int | None = None
    """Peak resident memory of the inference process, e.g. "1 GB"."""
    max_size: str | int | None = None
    """File size of each artifact, e.g. "2 MB"."""
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    """Share of test samples where the artifact and its PyTorch source agree on the top class."""
    min_int8_speedup: float | None = Field(None, gt=0)
    """fp32 latency / int8 latency on the same runtime (p50)."""
    artifacts: list[str] | None = None
    """Artifacts the per-artifact limits apply to; default all of the stage's artifacts."""

    @field_validator("max_peak_memory", "max_size")
    @classmethod
    def _size(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("max_latency_ms")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        for item in (value.values() if isinstance(value, dict) else [value]):
            if item is not None:
                parse_duration_ms(item)
        return value

    def latency_limits(self) -> dict[str, float] | None:
        """The latency limit per percentile, in ms."""
        if self.max_latency_ms is None:
            return None
        if isinstance(self.max_latency_ms, dict):
            return {k: parse_duration_ms(v) for k, v in self.max_latency_ms.items()}
        return {"p90": parse_duration_ms(self.max_latency_ms)}


class LayerPair(Strict):
    """A student layer and the teacher layer it learns from, both named by module path as
    `model.named_modules()` lists them (e.g. `net.0.5` for the cnn's second block)."""

    student: str
    teacher: str


class HintConfig(LayerPair):
    """Feature (hint) distillation, FitNets-style: the student layer's output, through a learned
    adapter (1x1 conv or linear) where channels differ, matches the teacher layer's output;
    spatial sizes are reconciled by average pooling the larger map."""

    loss: Literal["mse", "cosine"] = "mse"
    weight: float = Field(1.0, gt=0)


class AttentionConfig(Strict):
    """Attention transfer (Zagoruyko & Komodakis 2017): the normalised spatial map
    mean_c |f|^p of each paired layer, matched by squared error."""

    pairs: list[LayerPair] = Field(min_length=1)
    p: float = Field(2.0, gt=0)
    weight: float = Field(1000.0, gt=0)
    """The paper's beta; the maps are unit-norm, so the raw loss is small."""


class RelationalConfig(Strict):
    """Relational KD (Park et al. 2019): pairwise distances and triplet angles between the
    samples of a batch, student against teacher. Layers are flattened to one vector per
    sample; omit both to use the logits."""

    student: str | None = None
    teacher: str | None = None
    distance_weight: float = Field(1.0, ge=0)
    angle_weight: float = Field(2.0, ge=0)
    """The paper's 25 and 50 suit RKD as the only loss; in a sum with KD and CE they swamp
    the label terms, so the defaults are smaller in the same 1:2 ratio."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> RelationalConfig:
        if (self.student is None) != (self.teacher is None):
            raise ValueError("student: give both student and teacher layers, or neither")
        if self.distance_weight == 0 and self.angle_weight == 0:
            raise ValueError("distance_weight: distance_weight and angle_weight are both 0")
        return self


class EnsembleTeacher(TeacherConfig):
    """Another teacher whose soft targets are averaged with the pipeline teacher's; any
    architecture, given by checkpoint or trained by the distill stage (`train:`)."""

    weight: float = Field(1.0, gt=0)


class SelfDistillConfig(Strict):
    """Self-distillation: the student's own past teaches it, no external model needed.
    `ema`: an exponential moving average of its weights (updated every step);
    `checkpoint`: born-again, the student trained once (generation 1) teaches a fresh copy."""

    teacher: Literal["ema", "checkpoint"] = "ema"
    decay: float = Field(0.99, gt=0, lt=1)
    """EMA decay per step (ema only)."""
    temperature: float = Field(4.0, gt=0)
    weight: float = Field(1.0, gt=0)


class MutualConfig(Strict):
    """Deep mutual learning: a peer student trained at the same time; each learns from the
    other's softened outputs as well as from the labels."""

    peer: ModelConfig | None = None
    """The peer's architecture; default the same as the student (different initial weights)."""
    temperature: float = Field(1.0, gt=0)
    weight: float = Field(1.0, gt=0)


class DistillStage(Strict):
    """Train the student from the teacher(s), and the same student on hard labels alone as
    the baseline. The loss is a weighted sum: Hinton KD
    (alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE) plus every method given
    below. Layer paths are checked against the built models when the stage starts."""

    kind: Literal["distill"]
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    epochs: int = Field(30, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)
    baseline: bool = True
    """Also train the same student on hard labels alone (same epochs and seed)."""
    cache_teacher: bool = True
    """Compute the teachers' outputs (soft targets, and hinted features that fit in 256 MiB)
    once, memory-mapped on disk keyed by teacher and data, and reuse them across epochs and
    runs. Valid because edgekd trains without random augmentation; false runs the teachers on
    every batch."""
    teacher_weight: float = Field(1.0, gt=0)
    """Weight of the pipeline teacher in the ensemble when `teachers:` adds others."""
    teachers: list[EnsembleTeacher] = []
    """More teachers: the soft target is the weighted mean of all teachers' softened outputs."""
    hints: list[HintConfig] = []
    attention: AttentionConfig | None = None
    relational: RelationalConfig | None = None
    assistants: list[ModelConfig] = []
    """Teacher-assistant chain: each is distilled (logit KD) from the one before (the first
    from the teacher(s)) and teaches the next; the last teaches the student."""
    self_distillation: SelfDistillConfig | None = None
    mutual: MutualConfig | None = None
    budget: Budget | None = None

    @model_validator(mode="after")
    def _chain_uses_logits(self) -> DistillStage:
        named = self.hints or self.attention or (self.relational and self.relational.teacher)
        if self.assistants and named:
            raise ValueError("assistants: a teacher-assistant chain distils logits; it cannot "
                             "be combined with hints, attention or relational layers, which "
                             "name layers of the pipeline teacher")
        return self


class Calibration(Strict):
    """Post-training calibration. The int8 ONNX file is calibrated by onnxruntime with
    `method` and its options; the int8 TFLite by PT2E min/max observers (litert-torch)."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=50, le=100)
    """percentile: the |activation| percentile taken as the range."""
    num_bins: int = Field(2048, ge=16)
    """entropy / percentile: histogram bins collected per tensor."""
    num_quantized_bins: int = Field(128, ge=2)
    """entropy: bins of the quantized distribution the KL search compares against."""
    samples: int = Field(512, ge=1)
    """Training samples used for calibration."""


class QuantizeStage(Strict):
    """int8: quantization-aware fine-tuning (`qat`, torchao PT2E, symmetric per-channel
    weights, teacher still on) or post-training calibration (`ptq`)."""

    kind: Literal["quantize"]
    method: Literal["qat", "ptq"] = "qat"
    calibration: Calibration = Calibration()
    """ptq only."""
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    """Weight of the teacher's soft targets during fine-tuning (0 turns KD off)."""
    freeze_bn_after: int | None = Field(None, ge=1)
    """Epoch after which BatchNorm statistics stop updating (default: never)."""
    budget: Budget | None = None


ExportFormat = Literal["onnx_fp32", "onnx_int8", "tflite_int8", "tflite_fp32"]


class ExportStage(Strict):
    """Write deployable files and check each against the PyTorch model it came from."""

    kind: Literal["export"]
    formats: list[ExportFormat] = ["onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"]
    opset: int = Field(18, ge=13)
    validate_arch: Literal["arm64"] | None = None
    """Also run every file with the arm64 builds of its runtime under user-mode emulation
    (qemu) and compare with x86 (edgekd validate-arch); min_top1_agreement gates it too."""
    validate_cpu: Literal["cortex-a72", "cortex-a76", "cortex-a53", "neoverse-n1"] = "cortex-a72"
    """The emulated CPU (cortex-a72: Raspberry Pi 4, cortex-a76: Pi 5)."""
    budget: Budget | None = None


class ProfileStage(Strict):
    """Measure every exported artifact on the pipeline's target device."""

    kind: Literal["profile"]
    runs: int = Field(200, ge=1)
    warmup: int = Field(20, ge=0)
    threads: int | None = Field(None, ge=1)
    """Threads for the runtime; default the device profile's."""
    accuracy: bool = True
    """Also measure accuracy on the test split on the device."""
    budget: Budget | None = None


Stage = Annotated[
    Union[DistillStage, QuantizeStage, ExportStage, ProfileStage],  # noqa: UP007
    Field(discriminator="kind"),
]
STAGE_KINDS = ("distill", "quantize", "export", "profile")


class Pipeline(Strict):
    """One pipeline file: data, teacher, student, target device and stages in order."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: ModelConfig
    target: str = "local"
    """A device profile name from devices/ or a path to a device YAML."""
    on_unreachable: Literal["fail", "estimate"] = "fail"
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
        int8 = [f for f in (export.formats if export else []) if f.endswith("int8")]
        if int8 and "quantize" not in kinds:
            raise ValueError(f"stages: export formats {', '.join(int8)} need a quantize stage")
        return self

    def stage(self, kind: str) -> Any:
        return next((s for s in self.stages if s.kind == kind), None)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes an annotation may hold (through Optional, list, dict, Annotated)."""
    origin = get_origin(annotation)
    if origin is None:
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return [annotation] if is_model else []
    found = []
    for arg in get_args(annotation):
        found.extend(_unwrap(arg))
    return found


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """Follow a pydantic error location through the models, dropping union tags.

    Returns the location as the user wrote it and the model owning the last key.
    """
    shown: list = []
    current: list[type[BaseModel]] = [model]
    owner: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            shown.append(part)
            continue
        tagged = [m for m in current if m.model_fields.get("kind") is not None
                  and get_args(m.model_fields["kind"].annotation) == (part,)]
        if len(current) > 1 and tagged:
            current, owner = tagged, tagged[0]
            continue
        shown.append(part)
        owner = current[0] if current else None
        field = owner.model_fields.get(part) if owner else None
        current = _unwrap(field.annotation) if field else []
    return tuple(shown), owner


def _error_line(source: str, model: type[BaseModel], error: dict) -> str:
    loc, owner = _walk(model, tuple(error["loc"]))
    where = _format_loc(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = _did_you_mean(loc[-1], owner.model_fields) if owner else ""
        return f"{source}: {where}: unknown key{hint}"
    if kind == "union_tag_invalid":
        tag = error.get("input", {}).get("kind") if isinstance(error.get("input"), dict) else None
        hint = _did_you_mean(tag, STAGE_KINDS)
        return f"{source}: {where}.kind: unknown stage kind {tag!r}{hint}"
    if kind == "union_tag_not_found":
        return f"{source}: {where}: missing 'kind' (one of {', '.join(STAGE_KINDS)})"
    if kind == "missing":
        return f"{source}: {where}: required key missing"
    message = error["msg"].removeprefix("Value error, ")
    # Model-level validators name the field themselves ("path: required ...").
    if ": " in message and kind == "value_error" and not where.endswith(message.split(":")[0]):
        field, _, rest = message.partition(": ")
        if " " not in field:
            return f"{source}: {where + '.' if loc else ''}{field}: {rest}"
    return f"{source}: {where}: {message}"


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; syntax errors become a ConfigError naming the line."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}:{where}: YAML syntax error: {problem}"]) from None


def parse(model: type[BaseModel], raw: Any, source: str) -> Any:
    """Validate `raw` against `model`, raising ConfigError with every problem, one per line."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping of keys at the top level"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_error_line(source, model, e) for e in exc.errors()]) from None


def load_pipeline(path: str | Path, check_target: bool = True) -> Pipeline:
    """Load and validate a pipeline file, including that its target device profile exists."""
    path = Path(path)
    pipeline = parse(Pipeline, read_yaml(path), str(path))
    if check_target:
        from edgekd.devices.profiles import find_profile

        try:
            find_profile(pipeline.target, relative_to=path.parent)
        except ConfigError as exc:
            raise ConfigError([f"{path}: target: {line}" for line in exc.lines]) from None
    return pipeline
