"""Distillation methods: train the student (and the models a method adds) with the objective
the distill stage's config describes.

    Hinton KD   alpha * T^2 * KL(teachers_T || student_T) + (1 - alpha) * CE
    hints       weight * mse|cosine(adapter(student layer), teacher layer)
    attention   weight * mean over pairs ||at(student layer) - at(teacher layer)||^2
    relational  distance_weight * RKD-D + angle_weight * RKD-A
    self        weight * T^2 * KL(past_T || student_T)   (EMA of the student, or generation 1)
    mutual      weight * T^2 * KL(peer_T || student_T), and the peer learns from the student

Each is a term in the table `edgekd.kd.terms.TERMS`; `edgekd.kd.objective.Objective` sums
the enabled ones. Several teachers mix into one soft target (ensemble_log_probs). Layer
features, attention maps and relations always come from the first teacher (the pipeline's).
Use `train_students` to run a configured method on arrays without a pipeline (the bench does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config import DataConfig, DistillStage, ModelConfig
from edgekd.data import Splits
from edgekd.kd.compute import CPU, Compute
from edgekd.kd.objective import Objective
from edgekd.kd.terms import enabled_methods, layer_errors, student_paths, teacher_views
from edgekd.kd.terms.term import Teacher
from edgekd.kd.train import Hyperparameters, Minibatch, fit

__all__ = ["Teacher", "Trained", "enabled_methods", "hard_labels", "layer_errors",
           "student_paths", "teacher_views", "train_students"]


def hard_labels(logits: torch.Tensor, batch: Minibatch) -> torch.Tensor:
    """The baseline's loss: cross-entropy (nats) on the labels alone; logits (N, classes),
    labels int64 (N,) or class probabilities (N, classes)."""
    return F.cross_entropy(logits, batch.y)


@dataclass
class Trained:
    """One model a method trained, its config (None: the student's) and its curves (a peer
    trains inside the student's run and has none of its own)."""

    model: nn.Module
    config: ModelConfig | None
    history: list[dict]


def train_students(cfg: DistillStage, splits: Splits, teachers: list[Teacher],
                   new_student: Callable[[], nn.Module], student_config: ModelConfig,
                   build: Callable[[ModelConfig], nn.Module], seed: int, workdir: Path,
                   cache_dir: Path | None = None, parallel: bool = False,
                   compute: Compute = CPU, data: DataConfig | None = None
                   ) -> dict[str, Trained]:
    """Run the method `cfg` describes; returns every model it trained, by report name.

    `splits` is the data (edgekd.data.Splits: train and val are used); `new_student()`
    returns the student (`student_config`) at its starting point, the same weights on every
    call; `build(model_config)` builds an assistant or peer with fresh random weights.
    Epoch checkpoints go to `workdir` (a rerun resumes); teacher outputs are cached in
    `cache_dir` (default `workdir/cache`) when caching applies (cfg.cache_teacher, default:
    when the training data is not augmented). `parallel` trains data-parallel under
    torchrun; `compute` is the device and precision; `data` gives the default augmentation.
    Names, in training order: assistant_<i>... (teacher-assistant chain, Mirzadeh et al.
    2020), generation_1 (born-again), student, peer (mutual), baseline.
    """
    settings = Hyperparameters.of(cfg, data)
    caching = cfg.cache_teacher if cfg.cache_teacher is not None else not settings.augment.random
    cache = (cache_dir or workdir / "cache") if caching else None
    trained: dict[str, Trained] = {}

    def train(name: str, model: nn.Module, sources: list[Teacher], **objective_args
              ) -> list[dict]:
        objective = Objective(cfg, model, sources, splits.train, cache, device=compute.device,
                              **objective_args)
        try:
            return fit(model, objective, splits, settings, seed, workdir / f"{name}.ckpt", name,
                       extra=objective.extra, parallel=parallel, compute=compute)
        finally:
            objective.close()

    sources = teachers
    for i, assistant_cfg in enumerate(cfg.assistants, 1):
        torch.manual_seed(seed + 100 + i)  # every model is built from a seeded generator
        model = build(assistant_cfg)
        history = train(f"assistant_{i}", model, sources, role="assistant")
        trained[f"assistant_{i}"] = Trained(model, assistant_cfg, history)
        sources = [Teacher(model.eval())]
    past = None
    if cfg.self_distillation and cfg.self_distillation.teacher == "checkpoint":
        first = new_student()
        history = train("generation_1", first, sources, role="first_generation")
        trained["generation_1"] = Trained(first, None, history)
        past = first.eval()
    peer = None
    if cfg.mutual:
        torch.manual_seed(seed + 1)  # the peer starts elsewhere, or the two would agree
        peer = build(cfg.mutual.peer or student_config)
    student = new_student()
    trained["student"] = Trained(student, None, train("student", student, sources, peer=peer,
                                                      past=past))
    if peer is not None:
        trained["peer"] = Trained(peer, cfg.mutual.peer or student_config, [])
    if cfg.baseline:
        baseline = new_student()
        history = fit(baseline, hard_labels, splits, settings, seed,
                      workdir / "baseline.ckpt", "baseline", parallel=parallel,
                      compute=compute)
        trained["baseline"] = Trained(baseline, None, history)
    return trained
