"""Model specs in pipelines: the teacher, the student, assistants, extra teachers, peers."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

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


class TrainConfig(Strict):
    """Plain supervised training (used for a teacher the pipeline trains itself)."""

    epochs: int = Field(20, ge=1)
    lr: float = Field(0.01, gt=0)
    """Peak learning rate of the one-cycle schedule (AdamW)."""
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
