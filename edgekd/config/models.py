"""Model specs in pipelines: the teacher, the student, assistants, extra teachers, peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgekd.config.data import Augment, Side, check_mean_std
from edgekd.schema import Strict, did_you_mean, path_problem

# Where a model comes from: `arch: <source>:<name>` (cnn takes no name). `module:` is the fifth
# source, the user's own builder. Names are checked when the model is built (that needs torch,
# timm or transformers), so `edgekd validate` stays instant; the sources are checked here.
SOURCES = ("cnn", "torchvision", "timm", "hf")
CNN_ARCHS = ("cnn",)
TORCHVISION_ARCHS = (
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34",
    "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "efficientnet_b0",
    "squeezenet1_1", "mnasnet0_5",
)
"""torchvision names that may be written bare (`arch: resnet18` = `arch: torchvision:resnet18`);
with the prefix, any torchvision classification model is accepted."""
ARCHS = CNN_ARCHS + TORCHVISION_ARCHS
SPEC_FORMS = ("cnn", "torchvision:<name>", "timm:<name>", "hf:<directory>",
              "module: file.py:function")
MAX_EPOCHS = 100_000
"""The most epochs a training takes (and the bound of epoch counts such as patience): beyond
it the ETA is years and the number is a slip."""
MAX_BATCH_SIZE = 65_536
"""The largest batch_size a training takes."""


def split_arch(arch: str) -> tuple[str, str]:
    """(source, name) of an arch string: `timm:resnet10t` -> ("timm", "resnet10t"),
    `resnet18` -> ("torchvision", "resnet18"), `cnn` -> ("cnn", "")."""
    if arch in CNN_ARCHS:
        return "cnn", ""
    if arch in TORCHVISION_ARCHS:
        return "torchvision", arch
    source, _, name = arch.partition(":")
    return source, name

class OptimizerConfig(Strict):
    """How a training stage optimises: the optimiser, the learning-rate schedule around the
    stage's `lr` (its peak), warm-up and gradient clipping. The default is what edgekd always
    did: AdamW with a one-cycle schedule (Smith & Topin 2019; its own warm-up, 15 % of the
    steps)."""

    name: Literal["adamw", "sgd"] = "adamw"
    """adamw (decoupled weight decay) or sgd (with `momentum`)."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """sgd only."""
    schedule: Literal["onecycle", "cosine", "step"] = "onecycle"
    """onecycle; cosine (decay to 0 after `warmup_epochs`); step (x `gamma` every
    `step_epochs` after `warmup_epochs`)."""
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    """Linear warm-up from 0 to `lr` (cosine and step; one-cycle has its own)."""
    step_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    """step only: epochs between decays."""
    gamma: float = Field(0.1, gt=0, le=1)
    """step only: the factor of each decay."""
    clip_grad_norm: float | None = Field(None, gt=0)
    """Clip the global gradient L2 norm to this before each step (default: no clipping)."""

    @model_validator(mode="after")
    def _fields_match_choices(self) -> OptimizerConfig:
        given = self.model_fields_set
        if "momentum" in given and self.name != "sgd":
            raise ValueError("momentum: only the sgd optimiser takes a momentum")
        if "warmup_epochs" in given and self.schedule == "onecycle":
            raise ValueError("warmup_epochs: the one-cycle schedule has its own warm-up; use "
                             "schedule: cosine or step")
        for name in ("step_epochs", "gamma"):
            if name in given and self.schedule != "step":
                raise ValueError(f"{name}: only schedule: step decays in steps")
        return self


class TrainConfig(Strict):
    """Plain supervised training (used for a teacher the pipeline trains itself)."""

    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.01, gt=0)
    """Peak learning rate."""
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    weight_decay: float = Field(5e-4, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    val_every: int = Field(1, ge=1, le=MAX_EPOCHS)
    """Validate every this many epochs (and after the last); the best validated epoch is kept."""
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    """Early stopping: stop after this many validations without a better accuracy."""
    augment: Augment | None = None
    """This training's augmentation (default: data.augment)."""


class InputSpec(Strict):
    """What a network expects at its first layer. Every model edgekd builds takes raw pixels in
    [0, 1] at the data's size; this spec turns them into the network's input, inside the model,
    so every exported file applies it: resize to `size`, convert channels, scale to `range`,
    then subtract `mean` and divide by `std` (in that range's units).

    Fields left out come from the model's source (timm's pretrained_cfg, a Hugging Face
    preprocessor_config.json), else from the data's statistics for a model trained here from
    scratch; weights made elsewhere with no stated normalisation get none (raw pixels), and the
    report says so. Write `mean: [0], std: [1]` for explicitly none."""

    mean: list[float] | None = None
    """Per-channel mean, in the units of `range` (e.g. ImageNet's [0.485, 0.456, 0.406])."""
    std: list[float] | None = None
    """Per-channel standard deviation, with `mean`."""
    range: tuple[float, float] = (0.0, 1.0)
    """Pixel values the network was trained on before mean/std: [0, 1] or [0, 255]."""
    size: tuple[Side, Side] | None = None
    """(height, width) the network takes; other inputs are resized to it (bilinear) inside
    the model. Default: the data's size."""
    channels: Literal[1, 3] | None = None
    """Channels the network takes: grey data is repeated to 3, RGB data averaged to 1 (ITU-R
    601 luma). Default: 3 for torchvision, timm and Hugging Face models, else the data's."""
    channel_order: Literal["rgb", "bgr"] = "rgb"
    """bgr: the network was trained on BGR images (OpenCV); the channels are flipped."""

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, size):
        return (size, size) if isinstance(size, int) else size

    @model_validator(mode="after")
    def _mean_with_std(self) -> InputSpec:
        check_mean_std(self.mean, self.std)
        if self.range[1] <= self.range[0]:
            raise ValueError("range: [low, high] with high > low, e.g. [0, 1] or [0, 255]")
        if self.size is not None and min(self.size) < 1:
            raise ValueError("size: height and width must be >= 1")
        return self


class ModelConfig(Strict):
    """A network, from one of five sources (README "Bring your own model"):

    - `arch: cnn` with `width` / `depth` (edgekd's small CNN family);
    - `arch: torchvision:<name>` (or a bare name such as `resnet18`);
    - `arch: timm:<name>` (timm is pinned in constraints.txt);
    - `arch: hf:<directory>`: a Hugging Face image classifier saved with `save_pretrained`;
    - `module: my_models.py:build_student` (or `package.module:function`) with `kwargs:`: the
      user's own function returning an nn.Module.

    Weights come from `weights:` (a state_dict file, read with `weights_only=True`) or
    `checkpoint:` (a state_dict, an edgekd model file, or, with `trust_checkpoint: true`, a
    model saved whole with `torch.save(model)` or a `torch.export` program `.pt2`: unpickling
    runs code, so it needs the opt-in). Nothing is downloaded. Paths are relative to the
    pipeline file."""

    arch: str | None = None
    module: str | None = None
    """`file.py:function` or `package.module:function`; the function returns the network and
    receives `kwargs` (and `num_classes` when it takes that argument)."""
    kwargs: dict[str, Any] = {}
    """Keyword arguments for the `module:` function."""
    width: int | None = Field(None, ge=1, le=4096)
    """Channels of the first CNN block; each later block doubles it (cnn only)."""
    depth: int | None = Field(None, ge=1, le=6)
    """Number of conv blocks (cnn only)."""
    weights: Path | None = None
    """A state_dict to start from (as torchvision and timm publish them)."""
    checkpoint: Path | None = None
    """A saved model to start from: a state_dict, an edgekd model file (a run's teacher.pt /
    student.pt), or with `trust_checkpoint` a whole pickled model or a `.pt2` program."""
    trust_checkpoint: bool = False
    """Allow `checkpoint:` to be unpickled (runs code from the file); recorded in the report."""
    input: InputSpec | None = None
    """What the network expects (normalisation, size, channels); see InputSpec."""
    reset_head: bool = False
    """Replace a classifier trained for another number of classes with a fresh one. Students
    get this by default; a teacher needs it and a `train:` block to fine-tune the new head."""

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        source, name = split_arch(arch)
        if source == "hf" and path_problem(name):
            raise ValueError(f"the hf directory: {path_problem(name)}")
        if source not in SOURCES or (source != "cnn" and not name):
            raise ValueError(
                f"unknown architecture {arch!r}{did_you_mean(arch, ARCHS)}; give cnn, "
                f"{', '.join(TORCHVISION_ARCHS)}, or a source: torchvision:<name>, "
                f"timm:<name>, hf:<directory>, or module: file.py:function")
        return arch

    @field_validator("module")
    @classmethod
    def _module_function(cls, module: str) -> str:
        target, _, function = module.rpartition(":")
        if path_problem(target):
            raise ValueError(path_problem(target))
        if not target or not function.isidentifier():
            raise ValueError(f"{module!r}: give file.py:function or package.module:function")
        return module

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.arch and self.module:
            raise ValueError("module: give arch or module, not both")
        whole = self.checkpoint is not None and self.trust_checkpoint
        if not (self.arch or self.module or whole):
            raise ValueError("arch: required (or module:, or a whole saved model as checkpoint: "
                             "with trust_checkpoint: true)")
        if self.arch and split_arch(self.arch)[0] != "cnn" and (self.width or self.depth):
            raise ValueError("width/depth: only the cnn family takes width and depth")
        if self.kwargs and not self.module:
            raise ValueError("kwargs: only a module: function takes kwargs")
        if self.weights is not None and self.checkpoint is not None:
            raise ValueError("weights: give weights or checkpoint, not both")
        if self.arch and self.arch.startswith("hf:") and self.weights is not None:
            raise ValueError("weights: a Hugging Face directory holds its own weights")
        if self.trust_checkpoint and self.checkpoint is None:
            raise ValueError("trust_checkpoint: there is no checkpoint to trust")
        return self

    @property
    def pretrained(self) -> bool:
        """Its weights come from elsewhere (a file, or a Hugging Face directory)."""
        return (self.weights is not None or self.checkpoint is not None
                or bool(self.arch and self.arch.startswith("hf:")))

    @property
    def source(self) -> str:
        """cnn, torchvision, timm, hf, module or checkpoint (a whole saved model)."""
        if self.module:
            return "module"
        return split_arch(self.arch)[0] if self.arch else "checkpoint"


class TeacherConfig(ModelConfig):
    """The teacher: a checkpoint to load, or `train:` to have the pipeline train it."""

    train: TrainConfig | None = None
    """Train (or, with weights, fine-tune) the teacher on the data first."""
    expected_accuracy: float | None = Field(None, gt=0, le=1)
    """The accuracy the teacher is known to reach on this data; edgekd warns when it measures
    far less on the validation split (a normalisation mismatch is the usual cause)."""

    @model_validator(mode="after")
    def _weights_or_train(self) -> TeacherConfig:
        if self.train is None and not self.pretrained:
            raise ValueError("give the teacher trained weights (checkpoint: or weights:), or a "
                             "train: block to train it here")
        if self.reset_head and self.train is None:
            raise ValueError("reset_head: a teacher with a new head must be fine-tuned: add a "
                             "train: block")
        return self
