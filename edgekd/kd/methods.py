"""Distillation methods as one objective: a weighted sum of loss terms, each read from the
distill stage's config, and the plain function that trains students with it.

    Hinton KD   alpha * T^2 * KL(teachers_T || student_T) + (1 - alpha) * CE
    hints       weight * mse|cosine(adapter(student layer), teacher layer)
    attention   weight * mean over pairs ||at(student layer) - at(teacher layer)||^2
    relational  distance_weight * RKD-D + angle_weight * RKD-A
    self        weight * T^2 * KL(past_T || student_T)   (EMA of the student, or generation 1)
    mutual      weight * T^2 * KL(peer_T || student_T), and the peer learns from the student

Several teachers mix into one soft target (edgekd.kd.losses.ensemble_log_probs). Layer
features, attention maps and relations always come from the first teacher (the pipeline's).
Use `train_students` to run a configured method on arrays without a pipeline (the bench does).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config import DistillStage, ModelConfig
from edgekd.kd import losses
from edgekd.kd.cache import LOGITS, TeacherOutputs, View
from edgekd.kd.hooks import Taps, missing_path
from edgekd.kd.train import Schedule, fit


@dataclass
class Teacher:
    """A frozen model whose softened outputs a student learns from, and its ensemble weight."""

    model: nn.Module
    weight: float = 1.0


def teacher_views(cfg: DistillStage) -> list[View]:
    """What the first teacher must provide for the configured methods."""
    views = [LOGITS] + [View("feature", h.teacher) for h in cfg.hints]
    if cfg.attention:
        views += [View("attention", p.teacher, cfg.attention.p) for p in cfg.attention.pairs]
    if cfg.relational and cfg.relational.teacher:
        views.append(View("feature", cfg.relational.teacher))
    return views


def student_paths(cfg: DistillStage) -> list[str]:
    paths = [h.student for h in cfg.hints]
    if cfg.attention:
        paths += [p.student for p in cfg.attention.pairs]
    if cfg.relational and cfg.relational.student:
        paths.append(cfg.relational.student)
    return paths


def layer_errors(cfg: DistillStage, student: nn.Module, teacher: nn.Module) -> list[str]:
    """`field.path: message` for every layer path the models do not have."""
    fields: list[tuple[str, str, str]] = []
    for i, hint in enumerate(cfg.hints):
        fields += [(f"hints[{i}].student", hint.student, "student"),
                   (f"hints[{i}].teacher", hint.teacher, "teacher")]
    for i, pair in enumerate(cfg.attention.pairs if cfg.attention else []):
        fields += [(f"attention.pairs[{i}].student", pair.student, "student"),
                   (f"attention.pairs[{i}].teacher", pair.teacher, "teacher")]
    if cfg.relational and cfg.relational.student:
        fields += [("relational.student", cfg.relational.student, "student"),
                   ("relational.teacher", cfg.relational.teacher, "teacher")]
    errors = []
    for field, path, role in fields:
        problem = missing_path(student if role == "student" else teacher, path, role)
        if problem:
            errors.append(f"{field}: {problem}")
    return errors


class Objective:
    """The loss of one student under `cfg`: call it as fit's loss_fn.

    Trainable parts the loss owns (hint adapters, the mutual peer, the EMA copy) live in
    `extra`, which fit optimises and checkpoints with the student. Call `close()` after
    training to remove the forward hooks from the student.
    """

    def __init__(self, cfg: DistillStage, student: nn.Module, teachers: list[Teacher],
                 x_train: np.ndarray, cache_dir: Path | None, peer: nn.Module | None = None,
                 past: nn.Module | None = None):
        self.cfg, self.student = cfg, student
        self.weights = [t.weight for t in teachers]
        self.outputs = [TeacherOutputs(t.model, teacher_views(cfg) if i == 0 else [LOGITS],
                                       x_train, cache_dir) for i, t in enumerate(teachers)]
        selfd = cfg.self_distillation
        # Copy before hooking: a deep copy would carry the student's hooks along.
        ema = copy.deepcopy(student).requires_grad_(False) if selfd and selfd.teacher == "ema" \
            else None
        self.taps = Taps(student, student_paths(cfg))
        self.extra = nn.ModuleDict({"adapters": self._adapters(teachers[0].model, x_train)})
        if ema is not None:
            self.extra["ema"] = ema
        self.past = TeacherOutputs(past, [LOGITS], x_train, cache_dir) if past else None
        if cfg.mutual:
            if peer is None:
                raise ValueError("mutual learning needs a peer model")
            self.extra["peer"] = peer

    def _adapters(self, teacher: nn.Module, x: np.ndarray) -> nn.ModuleDict:
        """A 1x1 conv (maps) or linear (vectors) per hint whose channels differ."""
        if not self.cfg.hints:
            return nn.ModuleDict()
        sample = torch.from_numpy(x[:2])
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            self.student(sample)
            with Taps(teacher, [h.teacher for h in self.cfg.hints]) as teacher_taps:
                teacher.eval()(sample)
        self.student.train(was_training)
        adapters = nn.ModuleDict()
        for i, hint in enumerate(self.cfg.hints):
            s, t = losses.match_spatial(self.taps.outputs[hint.student],
                                        teacher_taps.outputs[hint.teacher])
            if s.shape[1] == t.shape[1]:
                adapters[str(i)] = nn.Identity()
            elif s.dim() == 4:
                adapters[str(i)] = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
            else:
                adapters[str(i)] = nn.Linear(s.shape[1], t.shape[1])
        return adapters

    def close(self) -> None:
        self.taps.close()

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, dev, host = self.cfg, logits.device, x.cpu()
        targets = [{k: v.to(dev) for k, v in out(host, idx).items()} for out in self.outputs]
        main = targets[0]
        terms: dict[str, tuple[float, torch.Tensor]] = {"ce": (1.0, F.cross_entropy(logits, y))}
        if cfg.alpha > 0:
            soft = losses.ensemble_log_probs([t["logits"] for t in targets], self.weights,
                                             cfg.temperature)
            terms["ce"] = (1 - cfg.alpha, terms["ce"][1])
            terms["kd"] = (cfg.alpha, losses.soft_kl(logits, soft, cfg.temperature))
        if cfg.hints:
            terms["hint"] = (1.0, sum(h.weight * self._hint(i, h, main)
                                      for i, h in enumerate(cfg.hints)))
        if cfg.attention:
            at = cfg.attention
            pairs = [losses.attention(losses.attention_map(self.taps.outputs[p.student], at.p),
                                      main[View("attention", p.teacher, at.p).name])
                     for p in at.pairs]
            terms["attention"] = (at.weight, sum(pairs) / len(pairs))
        if cfg.relational:
            terms.update(self._relational(logits, main))
        if cfg.self_distillation:
            terms["self"] = (cfg.self_distillation.weight, self._self(logits, x, idx))
        if cfg.mutual:
            terms.update(self._mutual(logits, x, y))
        total = sum(w * v for w, v in terms.values())
        return total, {k: float(v.detach()) for k, (_w, v) in terms.items()}

    def _hint(self, i: int, hint, targets: dict) -> torch.Tensor:
        s, t = losses.match_spatial(self.taps.outputs[hint.student],
                                    targets[View("feature", hint.teacher).name])
        return losses.feature(self.extra["adapters"][str(i)](s), t, hint.loss)

    def _relational(self, logits: torch.Tensor, targets: dict) -> dict:
        rel = self.cfg.relational
        s = self.taps.outputs[rel.student] if rel.student else logits
        t = targets[View("feature", rel.teacher).name] if rel.teacher else targets["logits"]
        out = {}
        if rel.distance_weight:
            out["rkd_distance"] = (rel.distance_weight, losses.rkd_distance(s, t))
        if rel.angle_weight:
            out["rkd_angle"] = (rel.angle_weight, losses.rkd_angle(s, t))
        return out

    def _self(self, logits: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        selfd = self.cfg.self_distillation
        if "ema" in self.extra:
            ema = self.extra["ema"]
            with torch.no_grad():
                # Follow the weights the last step produced, then predict with them.
                for e, s in zip(ema.parameters(), self.student.parameters(), strict=True):
                    e.lerp_(s, 1 - selfd.decay)
                for e, s in zip(ema.buffers(), self.student.buffers(), strict=True):
                    e.copy_(s)
                past = ema.eval()(x)
        else:
            past = self.past(x.cpu(), idx)["logits"].to(logits.device)
        return losses.soft_kl(logits, F.log_softmax(past / selfd.temperature, dim=1),
                              selfd.temperature)

    def _mutual(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict:
        mutual = self.cfg.mutual
        peer_logits = self.extra["peer"](x)
        t = mutual.temperature
        to_student = losses.soft_kl(logits, F.log_softmax(peer_logits.detach() / t, dim=1), t)
        to_peer = losses.soft_kl(peer_logits, F.log_softmax(logits.detach() / t, dim=1), t)
        return {"mutual": (mutual.weight, to_student),
                "peer": (1.0, F.cross_entropy(peer_logits, y)),
                "peer_mutual": (mutual.weight, to_peer)}


def hard_labels(logits: torch.Tensor, _x, y: torch.Tensor, _idx) -> torch.Tensor:
    """The baseline's loss: cross-entropy on the labels alone."""
    return F.cross_entropy(logits, y)


def logits_only(cfg: DistillStage) -> DistillStage:
    """The same stage config with only Hinton KD (for teacher-assistant links)."""
    return cfg.model_copy(update={"hints": [], "attention": None, "relational": None,
                                  "self_distillation": None, "mutual": None})


@dataclass
class Trained:
    """One model a method trained, its config (None: the student's) and its curves (a peer
    trains inside the student's run and has none of its own)."""

    model: nn.Module
    config: ModelConfig | None
    history: list[dict]


def train_students(cfg: DistillStage, splits, teachers: list[Teacher],
                   new_student: Callable[[], nn.Module], student_config: ModelConfig,
                   build: Callable[[ModelConfig], nn.Module], seed: int, workdir: Path,
                   cache_dir: Path | None = None, parallel: bool = False) -> dict[str, Trained]:
    """Run the method `cfg` describes; returns every model it trained, by report name.

    `splits` has x_train, y_train, x_val, y_val (numpy, float32 NCHW / int64); `new_student()`
    returns the student (`student_config`) at its starting point, the same weights on every
    call; `build(model_config)` builds an assistant or peer with fresh random weights.
    Epoch checkpoints go to `workdir` (a rerun resumes); teacher outputs are cached in
    `cache_dir` (default `workdir/cache`) when cfg.cache_teacher. `parallel` trains
    data-parallel under torchrun.
    Names: assistant_<i>..., generation_1 (born-again), student, peer, baseline.
    """
    schedule = Schedule(cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay)
    cache = (cache_dir or workdir / "cache") if cfg.cache_teacher else None
    trained: dict[str, Trained] = {}

    def train(name: str, model: nn.Module, link: DistillStage, sources: list[Teacher],
              **extras) -> nn.Module:
        objective = Objective(link, model, sources, splits.x_train, cache, **extras)
        history = fit(model, objective, splits.x_train, splits.y_train, splits.x_val,
                      splits.y_val, schedule, seed, workdir / f"{name}.ckpt", name,
                      extra=objective.extra, parallel=parallel)
        objective.close()
        return history

    sources = teachers
    for i, assistant_cfg in enumerate(cfg.assistants, 1):
        model = build(assistant_cfg)
        history = train(f"assistant_{i}", model, logits_only(cfg), sources)
        trained[f"assistant_{i}"] = Trained(model, assistant_cfg, history)
        sources = [Teacher(model.eval())]
    student_cfg, past = cfg, None
    if cfg.self_distillation and cfg.self_distillation.teacher == "checkpoint":
        first = new_student()
        history = train("generation_1", first, cfg.model_copy(
            update={"self_distillation": None, "mutual": None}), sources)
        trained["generation_1"] = Trained(first, None, history)
        past = first.eval()
    peer = None
    if cfg.mutual:
        torch.manual_seed(seed + 1)  # the peer starts elsewhere, or the two would agree
        peer = build(cfg.mutual.peer or student_config)
    student = new_student()
    history = train("student", student, student_cfg, sources, peer=peer, past=past)
    trained["student"] = Trained(student, None, history)
    if peer is not None:
        trained["peer"] = Trained(peer, cfg.mutual.peer or student_config, [])
    if cfg.baseline:
        baseline = new_student()
        history = fit(baseline, hard_labels, splits.x_train, splits.y_train, splits.x_val,
                      splits.y_val, schedule, seed, workdir / "baseline.ckpt", "baseline",
                      parallel=parallel)
        trained["baseline"] = Trained(baseline, None, history)
    return trained
