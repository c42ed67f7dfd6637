"""Tiny real pairs on the built-in digits: a small trained teacher, a smaller student."""

from pathlib import Path

import torch

from edgekd.config import DistillStage, ModelConfig
from edgekd.kd.methods import Teacher, hard_labels, train_students
from edgekd.kd.train import Hyperparameters, fit, predict, set_seed
from edgekd.metrics import top1_agreement
from edgekd.models import build

STUDENT = ModelConfig(arch="cnn", width=8, depth=2)


def make(splits, cfg: ModelConfig, seed: int = 0):
    meta = splits.meta()
    set_seed(seed)
    return build(cfg, meta)


def train_teacher(splits, cfg: ModelConfig, seed: int, path: Path):
    model = make(splits, cfg, seed)
    fit(model, hard_labels, splits, Hyperparameters(6, 0.01, 64), seed, path, "teacher")
    return model.eval()


def distill(splits, teachers, tmp_path, epochs: int = 3, **fields):
    """Train the tiny student with the method `fields` configure; returns the trained models
    and the untrained student's and the trained student's agreement with the first teacher."""
    cfg = DistillStage(kind="distill", epochs=epochs, baseline=False,
                       **{"lr": 0.03, "batch_size": 32, **fields})
    untrained = make(splits, STUDENT)
    teacher_test = predict(teachers[0].model, splits.x_test)
    before = top1_agreement(predict(untrained, splits.x_test), teacher_test)
    trained = train_students(cfg, splits, teachers, lambda: make(splits, STUDENT), STUDENT,
                             lambda c: make(splits, c, seed=torch.initial_seed() % 1000),
                             seed=0, workdir=tmp_path)
    after = top1_agreement(predict(trained["student"].model, splits.x_test), teacher_test)
    return trained, before, after


def one(teacher) -> list[Teacher]:
    return [Teacher(teacher)]
