"""Attention transfer (Zagoruyko & Komodakis 2017)."""

from __future__ import annotations

from edgekd.config import DistillStage
from edgekd.kd import losses
from edgekd.kd.cache import View
from edgekd.kd.terms.term import Batch, Layer, Parts, Setup


class Attention:
    """weight * mean over layer pairs of ||at(student layer) - at(teacher layer)||^2.

    at(f) is the unit-norm spatial map mean_c |f|^p, (N, H, W) (`losses.attention_map`); the
    larger of a pair is pooled to the smaller's size. Part: "attention" (dimensionless, mean
    over pixels of the squared difference), weight `attention.weight`.
    """

    field = "attention"
    assistants = False
    from_teachers = True

    def __init__(self, setup: Setup):
        self.cfg = setup.cfg.attention
        self.modules = {}

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return cfg.attention is not None

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        return ["attention"]

    @staticmethod
    def views(cfg: DistillStage) -> list[View]:
        return [View("attention", p.teacher, cfg.attention.p) for p in cfg.attention.pairs]

    @staticmethod
    def layers(cfg: DistillStage) -> list[Layer]:
        return [layer for i, pair in enumerate(cfg.attention.pairs)
                for layer in (Layer(f"attention.pairs[{i}].student", pair.student, "student", 4),
                              Layer(f"attention.pairs[{i}].teacher", pair.teacher, "teacher", 4))]

    def __call__(self, batch: Batch) -> Parts:
        at = self.cfg
        pairs = [losses.attention(losses.attention_map(batch.features[p.student], at.p),
                                  batch.targets[0][View("attention", p.teacher, at.p).name])
                 for p in at.pairs]
        return {"attention": (at.weight, sum(pairs) / len(pairs))}
