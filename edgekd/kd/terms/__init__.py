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


def layer_errors(cfg: DistillStage, student: nn.Module, teacher: nn.Module,
                 input_shape: tuple[int, ...] | None = None) -> list[str]:
    """`field.path: message` for every layer path the models do not have, e.g.
    `hints[0].student: no module 'net.9' in the student (nearest: net.0, net.1, net.2)`, and,
    given the models' `input_shape` (C, H, W), for every layer whose output has other than
    the dimensions its term reads (`Layer.dims`: attention needs N x C x H x W maps), found on
    one forward pass of a zero batch of two."""
    models = {"student": student, "teacher": teacher}
    errors, shaped = [], []
    for layer in layers(cfg, active(cfg)):
        problem = missing_path(models[layer.model], layer.path, layer.model)
        if problem:
            errors.append(f"{layer.field}: {problem}")
        elif layer.dims is not None and input_shape is not None:
            shaped.append(layer)
    for layer, shape in zip(shaped, _output_shapes(models, shaped, input_shape), strict=True):
        if shape is not None and len(shape) != layer.dims:
            errors.append(f"{layer.field}: {layer.path} gives a {len(shape)}-D output "
                          f"{tuple(shape)}; this term needs a {layer.dims}-D (N, C, H, W) "
                          "feature map: name a convolutional layer or block")
    return errors


def _output_shapes(models: dict[str, nn.Module], wanted: list[Layer],
                   input_shape: tuple[int, ...] | None) -> list[tuple[int, ...] | None]:
    """The output shape of each `wanted` layer on a zero batch (None: not a tensor)."""
    import torch

    found: dict[tuple[str, str], tuple[int, ...] | None] = {}

    def recorder(key: tuple[str, str]):
        def record(_module, _inputs, out) -> None:  # None: the output goes on unchanged
            found.setdefault(key, tuple(out.shape) if isinstance(out, torch.Tensor) else None)
        return record

    for name, model in models.items():
        paths = {layer.path for layer in wanted if layer.model == name}
        if not paths:
            continue
        modules = dict(model.named_modules())
        hooks = [modules[path].register_forward_hook(recorder((name, path))) for path in paths]
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(2, *input_shape))
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
    return [found.get((layer.model, layer.path)) for layer in wanted]


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
