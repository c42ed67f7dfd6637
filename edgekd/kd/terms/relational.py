"""Relational KD (Park et al. 2019): distances and angles within the batch."""

from __future__ import annotations

from edgekd.config import DistillStage
from edgekd.kd import losses
from edgekd.kd.cache import View
from edgekd.kd.terms.term import Batch, Layer, Parts, Setup


class Relational:
    """distance_weight * RKD-D + angle_weight * RKD-A between the student's and the first
    teacher's embeddings of the batch's samples.

    The embeddings are the named layers' outputs flattened to (N, features), or the logits
    (N, classes) when no layers are named. RKD-D: Huber loss between the pairwise distances,
    each divided by its mean; RKD-A: Huber loss between the cosines of every triplet's angle.
    Parts: "rkd_distance" and "rkd_angle" (dimensionless), each only when its weight is not 0.
    """

    field = "relational"
    assistants = False
    from_teachers = True

    def __init__(self, setup: Setup):
        self.cfg = setup.cfg.relational
        self.modules = {}

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return cfg.relational is not None

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        return ["relational"]

    @staticmethod
    def views(cfg: DistillStage) -> list[View]:
        return [View("feature", cfg.relational.teacher)] if cfg.relational.teacher else []

    @staticmethod
    def layers(cfg: DistillStage) -> list[Layer]:
        rel = cfg.relational
        if not rel.student:
            return []
        return [Layer("relational.student", rel.student, "student"),
                Layer("relational.teacher", rel.teacher, "teacher")]

    def __call__(self, batch: Batch) -> Parts:
        rel, first = self.cfg, batch.targets[0]
        s = batch.features[rel.student] if rel.student else batch.logits
        t = first[View("feature", rel.teacher).name] if rel.teacher else first["logits"]
        parts = {}
        if rel.distance_weight:
            parts["rkd_distance"] = (rel.distance_weight, losses.rkd_distance(s, t))
        if rel.angle_weight:
            parts["rkd_angle"] = (rel.angle_weight, losses.rkd_angle(s, t))
        return parts
