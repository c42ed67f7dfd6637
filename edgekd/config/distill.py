"""The distill stage's schema: Hinton KD settings and each further method's config.

Kept apart from the losses (edgekd.kd) so validating a pipeline loads no torch; the KD term
table maps each method field here to the loss that implements it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgekd.budgets import DistillBudget
from edgekd.config.data import Augment
from edgekd.config.models import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    ModelConfig,
    OptimizerConfig,
    TeacherConfig,
)
from edgekd.schema import Strict


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
    p: float = Field(2.0, gt=0, le=8)
    """The power of |f| in the map (the paper uses 2); above 8 the powers of activations
    overflow float32 (p 1e308 gave a NaN loss)."""
    weight: float = Field(10.0, gt=0)
    """The loss is a mean over map pixels, so it grows as the maps shrink (1 / (H*W)): the
    paper's beta of 1000, set for wide ResNets' 32x32 to 8x8 maps, swamps the label loss on
    small maps and small students. Measured (bench/README.md): weight 1000 cost 32 pt against
    hard labels on digits (8x8 inputs, section 1b); on the 100-class KD task (32 px, maps
    32x32 to 4x4, 3 seeds) it cost 3.2 pt where 10 was level with hard labels (-0.04 pt), and
    on one seed weights 1 / 10 / 100 / 1000 gave 88.0 / 89.2 / 88.3 / 86.3 % test accuracy
    (validation 90.2 / 88.7 / 88.2 / 87.8 %)."""


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

    @model_validator(mode="after")
    def _decay_for_ema(self) -> SelfDistillConfig:
        if self.teacher != "ema" and "decay" in self.model_fields_set:
            raise ValueError("decay: only the ema teacher has a decay")
        return self


class MutualConfig(Strict):
    """Deep mutual learning: a peer student trained at the same time; each learns from the
    other's softened outputs as well as from the labels."""

    peer: ModelConfig | None = None
    """The peer's architecture; default the same as the student (different initial weights).
    A `checkpoint:` is the peer's starting point."""
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
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    weight_decay: float = Field(5e-4, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    val_every: int = Field(1, ge=1, le=MAX_EPOCHS)
    """Validate every this many epochs (and after the last); the best validated epoch is kept."""
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    """Early stopping: stop after this many validations without a better accuracy."""
    augment: Augment | None = None
    """This stage's augmentation (default: data.augment); the baseline gets the same."""
    baseline: bool = True
    """Also train the same student on hard labels alone (same epochs and seed)."""
    ship: Literal["kd", "baseline", "best"] = "best"
    """Which student later stages get as `student_fp32` (distill/student.pt): the KD student,
    the hard-label baseline, or `best`: the baseline only when it beats the KD student on the
    validation split beyond noise (two standard errors of the difference), else the KD
    student. Recorded in the report; both stay as artifacts (`kd_student_fp32`,
    `baseline_fp32`). Not part of the cache key: changing it retrains nothing."""
    check_export: bool = True
    """Before training, check on the untrained student that it survives what the later stages
    do to it (torch.export, QAT preparation, a dry conversion to every export format); a
    failure stops the run naming the format and the op. Results are cached per architecture
    (edgekd.export.check)."""
    cache_teacher: bool | None = None
    """Compute the teachers' outputs (soft targets, and hinted features that fit in 256 MiB)
    once, memory-mapped on disk keyed by teacher and data, and reuse them across epochs and
    runs; false runs the teachers on every batch. Default: cache unless the training data is
    augmented (an augmented image is new every epoch, so its teacher output cannot be
    stored); true with augmentation is an error."""
    teacher_weight: float = Field(1.0, gt=0)
    """Weight of the pipeline teacher in the ensemble when `teachers:` adds others."""
    teachers: list[EnsembleTeacher] = []
    """More teachers: the soft target is the weighted mean of all teachers' softened outputs."""
    hints: list[HintConfig] = []
    attention: AttentionConfig | None = None
    relational: RelationalConfig | None = None
    assistants: list[ModelConfig] = []
    """Teacher-assistant chain: each is distilled (logit KD) from the one before (the first
    from the teacher(s)) and teaches the next; the last teaches the student. An assistant's
    `checkpoint:` is its starting point (random weights without one)."""
    self_distillation: SelfDistillConfig | None = None
    mutual: MutualConfig | None = None
    budget: DistillBudget | None = None

    @model_validator(mode="after")
    def _ship_needs_baseline(self) -> DistillStage:
        if self.ship == "baseline" and not self.baseline:
            raise ValueError("ship: baseline needs the baseline trained (baseline: true)")
        return self

    @model_validator(mode="after")
    def _teacher_weight_needs_teachers(self) -> DistillStage:
        if "teacher_weight" in self.model_fields_set and not self.teachers:
            raise ValueError("teacher_weight: weighs the pipeline teacher in an ensemble; it "
                             "has no effect without `teachers:`")
        return self

    @model_validator(mode="after")
    def _chain_uses_logits(self) -> DistillStage:
        named = self.hints or self.attention or (self.relational and self.relational.teacher)
        if self.assistants and named:
            raise ValueError("assistants: a teacher-assistant chain distils logits; it cannot "
                             "be combined with hints, attention or relational layers, which "
                             "name layers of the pipeline teacher")
        return self
