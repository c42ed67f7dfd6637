"""The distill objective: the weighted sum of the loss terms a config enables
(edgekd.kd.terms), in the shape `edgekd.kd.train.fit` calls a loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.config import DistillStage
from edgekd.data import Part
from edgekd.kd import terms
from edgekd.kd.cache import LOGITS, TeacherOutputs
from edgekd.kd.hooks import Taps
from edgekd.kd.terms.term import Batch, Setup, Teacher
from edgekd.kd.train import Minibatch


class Objective:
    """The loss of one model under `cfg`: call it as fit's loss_fn.

    `role` picks the terms (`edgekd.kd.terms.active`): "student" all enabled ones,
    "assistant" those declared for teacher-assistant links, "first_generation" those that
    learn from the teachers. `objective(logits, minibatch)` takes the student's logits
    (N, classes) and the step's edgekd.kd.train.Minibatch (inputs, labels, positions), and
    returns (sum of weight * term, {term name: detached scalar tensor}). Teachers run where
    the inputs are; cached outputs are looked up by the minibatch's positions.

    Modules the terms own (hint adapters, the EMA copy, the mutual peer) live in `extra`,
    which fit optimises and checkpoints with the model. Call `close()` after training to
    remove the forward hooks from the model. Raises ValueError when an enabled term lacks
    its model (mutual: `peer`; born-again: `past`).
    """

    def __init__(self, cfg: DistillStage, student: nn.Module, teachers: list[Teacher],
                 train: Part, cache_dir: Path | None, role: terms.Role = "student",
                 peer: nn.Module | None = None, past: nn.Module | None = None,
                 device: torch.device | None = None):
        chosen = terms.active(cfg, role)
        views = terms.views(cfg, chosen)
        self.outputs = [TeacherOutputs(t.model, views if i == 0 else [LOGITS], train,
                                       cache_dir, device) for i, t in enumerate(teachers)]
        # Built before the taps go on: the EMA copy must not carry the objective's hooks.
        setup = Setup(cfg, student, teachers, train, cache_dir, peer, past, device)
        self.terms = [term(setup) for term in chosen]
        self.taps = Taps(student, [layer.path for layer in terms.layers(cfg, chosen)
                                   if layer.model == "student"])
        self.extra = nn.ModuleDict({name: module for term in self.terms
                                    for name, module in term.modules.items()})

    def close(self) -> None:
        self.taps.close()

    def __call__(self, logits: torch.Tensor, minibatch: Minibatch
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, index = minibatch.x, minibatch.index
        targets = [out(x, index) for out in self.outputs]
        batch = Batch(logits, x, minibatch.y, index, targets, self.taps.outputs)
        parts = {name: part for term in self.terms for name, part in term(batch).items()}
        total = sum(w * v for w, v in parts.values())
        # Detached tensors, not floats: reading a value would sync with the device every step.
        return total, {k: v.detach() for k, (_w, v) in parts.items()}
