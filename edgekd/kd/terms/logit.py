"""Logit KD (Hinton et al. 2015), with one teacher or the ensemble of several."""

from __future__ import annotations

import torch.nn.functional as F

from edgekd.config import DistillStage
from edgekd.kd import losses
from edgekd.kd.terms.term import Batch, LogitsOnly, Parts, Setup


class Logit(LogitsOnly):
    """alpha * T^2 * KL(teachers_T || student_T) + (1 - alpha) * CE(student, labels).

    The soft target is the weighted mean of every teacher's softened distribution
    (`losses.ensemble_log_probs`), so one teacher is the plain Hinton loss. Always on: with
    alpha 0 it is cross-entropy alone. Parts: "ce" (nats, weight 1 - alpha or 1) and "kd"
    (T^2 * nats, weight alpha).
    """

    field = "teachers"
    assistants = True
    from_teachers = True

    def __init__(self, setup: Setup):
        self.alpha, self.temperature = setup.cfg.alpha, setup.cfg.temperature
        self.weights = [t.weight for t in setup.teachers]
        self.modules = {}

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return True

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        names = ["logit_kd"] if cfg.alpha > 0 else []
        return names + (["ensemble"] if cfg.teachers else [])

    def __call__(self, batch: Batch) -> Parts:
        ce = F.cross_entropy(batch.logits, batch.y)
        if self.alpha == 0:
            return {"ce": (1.0, ce)}
        soft = losses.ensemble_log_probs([t["logits"] for t in batch.targets], self.weights,
                                         self.temperature)
        return {"ce": (1 - self.alpha, ce),
                "kd": (self.alpha, losses.soft_kl(batch.logits, soft, self.temperature))}
