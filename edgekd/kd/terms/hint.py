"""Hints: FitNets (Romero et al. 2015) feature matching through learned adapters."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekd.config import DistillStage, HintConfig
from edgekd.kd import losses
from edgekd.kd.cache import View
from edgekd.kd.hooks import Taps
from edgekd.kd.terms.term import Batch, Layer, Parts, Setup


class Hint:
    """sum over hints of weight * mse|cosine(adapter(student layer), teacher layer).

    Maps are average-pooled to the smaller spatial size (`losses.match_spatial`); where the
    channels differ an adapter (1x1 conv for maps, linear for vectors) maps the student's to
    the teacher's, trained with the student and saved as `adapters.<i>`. Part: "hint", the
    mean squared error (feature units squared) or 1 - cosine similarity, weight 1.
    """

    field = "hints"
    assistants = False
    from_teachers = True

    def __init__(self, setup: Setup):
        self.hints = setup.cfg.hints
        self.modules = {"adapters": _adapters(self.hints, setup.student,
                                              setup.teachers[0].model,
                                              setup.train.inputs(np.arange(2)))}

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return bool(cfg.hints)

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        return ["hints"]

    @staticmethod
    def views(cfg: DistillStage) -> list[View]:
        return [View("feature", h.teacher) for h in cfg.hints]

    @staticmethod
    def layers(cfg: DistillStage) -> list[Layer]:
        return [layer for i, h in enumerate(cfg.hints)
                for layer in (Layer(f"hints[{i}].student", h.student, "student"),
                              Layer(f"hints[{i}].teacher", h.teacher, "teacher"))]

    def __call__(self, batch: Batch) -> Parts:
        return {"hint": (1.0, sum(h.weight * self._one(i, h, batch)
                                  for i, h in enumerate(self.hints)))}

    def _one(self, i: int, hint: HintConfig, batch: Batch) -> torch.Tensor:
        s, t = losses.match_spatial(batch.features[hint.student],
                                    batch.targets[0][View("feature", hint.teacher).name])
        return losses.feature(self.modules["adapters"][str(i)](s), t, hint.loss)


def _adapters(hints: list[HintConfig], student: nn.Module, teacher: nn.Module,
              x: np.ndarray) -> nn.ModuleDict:
    """A 1x1 conv (maps) or linear (vectors) per hint whose channels differ, sized by running
    both models on two training samples."""
    sample = torch.from_numpy(x[:2])
    was_training = student.training
    with torch.no_grad(), Taps(student, [h.student for h in hints]) as student_taps, \
            Taps(teacher, [h.teacher for h in hints]) as teacher_taps:
        # Each model where it is: a teacher an earlier run moved to the GPU stays there.
        for model in (student, teacher):
            where = next(model.parameters(), sample).device
            model.eval()(sample.to(where))
    student.train(was_training)
    adapters = nn.ModuleDict()
    for i, hint in enumerate(hints):
        s, t = losses.match_spatial(student_taps.outputs[hint.student],
                                    teacher_taps.outputs[hint.teacher])
        if s.shape[1] == t.shape[1]:
            adapters[str(i)] = nn.Identity()
        elif s.dim() == 4:
            adapters[str(i)] = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
        else:
            adapters[str(i)] = nn.Linear(s.shape[1], t.shape[1])
    return adapters
