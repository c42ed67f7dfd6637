"""What a distillation term is: the protocol every entry of `edgekd.kd.terms.TERMS` follows,
what it is built from (`Setup`) and what it is given on every training batch (`Batch`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import torch
from torch import nn

from edgekd.config import DistillStage
from edgekd.data import Part
from edgekd.kd.cache import View

Parts = dict[str, tuple[float, torch.Tensor]]
"""Named loss terms a term adds, each `name: (weight, scalar value)`; the objective sums
weight * value over all of them and records each value as `loss_<name>` in the history."""


@dataclass
class Teacher:
    """A frozen model whose softened outputs a student learns from, and its ensemble weight."""

    model: nn.Module
    weight: float = 1.0


@dataclass(frozen=True)
class Layer:
    """A layer path one config field names, checked against the model it must exist in."""

    field: str
    """Where the path is written, e.g. `hints[0].student` (relative to the distill stage)."""
    path: str
    """The module path, as `model.named_modules()` lists it (e.g. `net.0.5`)."""
    model: Literal["student", "teacher"]
    """The student's layers are tapped live; the (first) teacher's are read as a View."""
    dims: int | None = None
    """How many dimensions its output must have (4: an N x C x H x W feature map, for the
    terms that read spatial maps), checked on one forward pass before training."""


@dataclass
class Setup:
    """What a term is built from, once per trained model."""

    cfg: DistillStage
    student: nn.Module
    """The model being trained, before the objective hooks it."""
    teachers: list[Teacher]
    """The first is the pipeline's teacher (or, for an assistant link, the one before)."""
    train: Part
    """The train split; a batch's `idx` holds positions in it."""
    cache_dir: Path | None
    """Where teacher outputs are cached (None: computed on every batch)."""
    peer: nn.Module | None = None
    """Deep mutual learning's peer (trained alongside the student)."""
    past: nn.Module | None = None
    """Born-again self-distillation's first generation (frozen)."""
    device: torch.device | None = None
    """The training device (where cached outputs are computed)."""


@dataclass
class Batch:
    """One training step's inputs to every term; tensors sit on the student's device."""

    logits: torch.Tensor
    """The student's output, (N, classes), with its autograd graph."""
    x: torch.Tensor
    """The inputs, float32 (N, C, H, W)."""
    y: torch.Tensor
    """The labels, int64 (N,), or class probabilities (N, classes) after MixUp / CutMix /
    label smoothing."""
    idx: torch.Tensor | None
    """The samples' positions in `Setup.train`, int64 (N,), on the CPU; None for augmented
    inputs (no cached output belongs to them)."""
    targets: list[dict[str, torch.Tensor]]
    """Per teacher (the first is the pipeline's), its outputs by `View.name`: every teacher
    gives "logits" (N, classes); the first also gives the views the enabled terms declare."""
    features: dict[str, torch.Tensor]
    """The student's tapped layer outputs by module path, with their autograd graph."""


class Term(Protocol):
    """One distillation method. The class declares what it reads; an instance, built from a
    `Setup` when the config enables the method, computes its loss on each `Batch`."""

    field: ClassVar[str]
    """The DistillStage field that configures it (besides the shared temperature/alpha)."""
    assistants: ClassVar[bool]
    """Whether teacher-assistant links use it too: only terms that say True reach them. Only
    logit KD does (Mirzadeh et al. 2020: the chain distils logits); tests/kd check each term
    declares it."""
    from_teachers: ClassVar[bool]
    """Whether it learns from the teachers' outputs (False: from the student's own past or a
    peer). Born-again's first generation trains with these terms only."""
    modules: dict[str, nn.Module]
    """Modules the loss owns (adapters, an EMA copy, a peer), optimised where they require
    gradients and checkpointed with the student, by name."""

    def __init__(self, setup: Setup) -> None: ...

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        """Whether `cfg` turns the term on."""
        ...

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        """The report's names for what `cfg` turns on (e.g. "logit_kd", "ensemble")."""
        ...

    @staticmethod
    def views(cfg: DistillStage) -> list[View]:
        """What the first teacher must give besides its logits (every teacher gives those)."""
        ...

    @staticmethod
    def layers(cfg: DistillStage) -> list[Layer]:
        """Every layer path the term's config names; the student's ones are tapped."""
        ...

    def __call__(self, batch: Batch) -> Parts: ...


class LogitsOnly:
    """For terms that read logits alone (the teachers', a peer's, their own past): nothing
    else asked of the first teacher, no layer tapped."""

    @staticmethod
    def views(cfg: DistillStage) -> list[View]:
        return []

    @staticmethod
    def layers(cfg: DistillStage) -> list[Layer]:
        return []
