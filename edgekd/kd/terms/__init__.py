"""The distillation methods, one term each, in the explicit table `TERMS`.

Each entry is a class (see `edgekd.kd.terms.term.Term`) that declares the DistillStage field
configuring it, whether teacher-assistant links use it, the teacher views and layer paths it
reads, and computes its loss terms; `edgekd.kd.objective.Objective` sums the enabled ones.
To add a method: one module here with its class, one line in `TERMS` (a test checks the
table against DistillStage's fields). The table's order is the order of the loss terms in the
history and of the methods in the report.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from edgekd.config import DistillStage
from edgekd.kd.cache import LOGITS, View
from edgekd.kd.hooks import missing_path
from edgekd.kd.terms.attention import Attention
from edgekd.kd.terms.hint import Hint
from edgekd.kd.terms.logit import Logit
from edgekd.kd.terms.mutual import Mutual
from edgekd.kd.terms.relational import Relational
from edgekd.kd.terms.selfdistill import SelfDistill
from edgekd.kd.terms.term import Layer, Term

TERMS: dict[str, type[Term]] = {
    "logit": Logit,
    "hint": Hint,
    "attention": Attention,
    "relational": Relational,
    "self": SelfDistill,
    "mutual": Mutual,
}

Role = Literal["student", "assistant", "first_generation"]


def active(cfg: DistillStage, role: Role = "student") -> list[type[Term]]:
    """The terms `cfg` enables for one trained model, in table order.

    The student takes them all; a teacher-assistant link only those declared for assistants;
    born-again's first generation only those that learn from the teachers (it has no past
    self yet, and a mutual peer trains with the final student).
    """
    terms = [term for term in TERMS.values() if term.enabled(cfg)]
    if role == "assistant":
        return [term for term in terms if term.assistants]
    if role == "first_generation":
        return [term for term in terms if term.from_teachers]
    return terms


def views(cfg: DistillStage, terms: list[type[Term]]) -> list[View]:
    """What the first teacher must give for `terms`: its logits, then each term's views."""
    return [LOGITS] + [view for term in terms for view in term.views(cfg)]


def layers(cfg: DistillStage, terms: list[type[Term]]) -> list[Layer]:
    return [layer for term in terms for layer in term.layers(cfg)]


def teacher_views(cfg: DistillStage) -> list[View]:
    """What the first teacher must provide for the configured methods (logits first)."""
    return views(cfg, active(cfg))


def student_paths(cfg: DistillStage) -> list[str]:
    """The student layers the configured methods tap, by module path."""
    return [layer.path for layer in layers(cfg, active(cfg)) if layer.model == "student"]


def layer_errors(cfg: DistillStage, student: nn.Module, teacher: nn.Module) -> list[str]:
    """`field.path: message` for every layer path the models do not have, e.g.
    `hints[0].student: no module 'net.9' in the student (nearest: net.0, net.1, net.2)`."""
    models = {"student": student, "teacher": teacher}
    errors = []
    for layer in layers(cfg, active(cfg)):
        problem = missing_path(models[layer.model], layer.path, layer.model)
        if problem:
            errors.append(f"{layer.field}: {problem}")
    return errors


def enabled_methods(cfg: DistillStage) -> list[str]:
    """The methods a distill config combines, as the report lists them: those that learn
    from the teachers, the teacher-assistant chain, then the teacher-free ones, e.g.
    ["logit_kd", "ensemble", "hints", "attention", "relational", "assistants",
    "self_distillation", "mutual"] with everything on."""
    terms = active(cfg)
    names = [name for term in terms if term.from_teachers for name in term.methods(cfg)]
    names += ["assistants"] if cfg.assistants else []
    return names + [name for term in terms if not term.from_teachers
                    for name in term.methods(cfg)]
