"""Self-distillation: the student's own past teaches it, no external model needed."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from edgekd.config import DistillStage
from edgekd.kd import losses
from edgekd.kd.cache import LOGITS, TeacherOutputs
from edgekd.kd.terms.term import Batch, LogitsOnly, Parts, Setup


class SelfDistill(LogitsOnly):
    """weight * T^2 * KL(past_T || student_T), the past being either

    - `ema`: an exponential moving average of the student's weights, moved toward the
      student's current weights (by 1 - decay) before every step and saved as `ema`
      (mean-teacher style, Tarvainen & Valpola 2017); its buffers copy the student's;
    - `checkpoint`: born-again networks (Furlanello et al. 2018), the student trained once
      (generation 1, `Setup.past`) teaching a fresh copy.

    Part: "self" (T^2 * nats), weight `self_distillation.weight`. Raises ValueError when
    `checkpoint` is configured without a `Setup.past`.
    """

    field = "self_distillation"
    assistants = False
    from_teachers = False

    def __init__(self, setup: Setup):
        self.cfg, self.student = setup.cfg.self_distillation, setup.student
        self.modules, self.past = {}, None
        if self.cfg.teacher == "ema":
            # Copied before the objective hooks the student: a deep copy would carry hooks.
            self.modules["ema"] = copy.deepcopy(setup.student).requires_grad_(False)
        elif setup.past is None:
            raise ValueError("born-again self-distillation needs the first generation")
        else:
            self.past = TeacherOutputs(setup.past, [LOGITS], setup.train, setup.cache_dir,
                                       setup.device)

    @staticmethod
    def enabled(cfg: DistillStage) -> bool:
        return cfg.self_distillation is not None

    @staticmethod
    def methods(cfg: DistillStage) -> list[str]:
        return ["self_distillation"]

    def __call__(self, batch: Batch) -> Parts:
        t = self.cfg.temperature
        past = self._ema(batch.x) if self.past is None else \
            self.past(batch.x, batch.idx)["logits"]
        return {"self": (self.cfg.weight,
                         losses.soft_kl(batch.logits, F.log_softmax(past / t, dim=1), t))}

    def _ema(self, x: torch.Tensor) -> torch.Tensor:
        """Follow the weights the last step produced, then predict with them."""
        ema = self.modules["ema"]
        with torch.no_grad():
            for e, s in zip(ema.parameters(), self.student.parameters(), strict=True):
                e.lerp_(s, 1 - self.cfg.decay)
            for e, s in zip(ema.buffers(), self.student.buffers(), strict=True):
                e.copy_(s)
            return ema.eval()(x)
