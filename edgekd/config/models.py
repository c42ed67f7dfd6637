"""Model specs in pipelines: the teacher, the student, assistants, extra teachers, peers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd.config.data import Augment
from edgekd.schema import Strict, did_you_mean

# Architectures edgekd can build. Kept as names here so validation needs no torch import;
# edgekd.models.build() maps them to builders and a test checks the two agree.
CNN_ARCHS = ("cnn",)
TORCHVISION_ARCHS = (
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34",
    "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "efficientnet_b0",
    "squeezenet1_1", "mnasnet0_5",
)
ARCHS = CNN_ARCHS + TORCHVISION_ARCHS


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
    warmup_epochs: int = Field(0, ge=0)
    """Linear warm-up from 0 to `lr` (cosine and step; one-cycle has its own)."""
    step_epochs: int = Field(10, ge=1)
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

    epochs: int = Field(20, ge=1)
    lr: float = Field(0.01, gt=0)
    """Peak learning rate."""
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    val_every: int = Field(1, ge=1)
    """Validate every this many epochs (and after the last); the best validated epoch is kept."""
    patience: int | None = Field(None, ge=1)
    """Early stopping: stop after this many validations without a better accuracy."""
    augment: Augment | None = None
    """This training's augmentation (default: data.augment)."""


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
            raise ValueError(f"unknown architecture {arch!r}{did_you_mean(arch, ARCHS)}")
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
