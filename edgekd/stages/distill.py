"""distill: train the student from the teacher(s) with the configured methods, and the same
student on hard labels alone as the baseline it must beat.

Layer paths in the config are checked here, against the built models, before anything
trains: a wrong one is a ConfigError naming the file, the field and the nearest real paths.
(`edgekd validate` stays a pure schema check without torch.) Under torchrun, rank 0 hands the
stage to the other ranks and alone writes checkpoints and artifacts.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import ConfigError, DistillStage, EnsembleTeacher, ModelConfig
from edgekd.context import Context
from edgekd.kd import distributed
from edgekd.kd.methods import Teacher, Trained, hard_labels, layer_errors, train_students
from edgekd.kd.train import Schedule, fit, predict, set_seed
from edgekd.metrics import accuracy, expected_calibration_error, top1_agreement
from edgekd.models import build, count_macs, count_params, load_model, save_model


def run(cfg: DistillStage, ctx: Context) -> StageResult:
    _check_layers(cfg, ctx)
    distributed.dispatch("distill", cfg, ctx)
    splits, out = ctx.splits(), ctx.stage_dir("distill")
    result = StageResult({}, {}, info={"methods": methods(cfg)})
    teachers = [Teacher(ctx.teacher(), cfg.teacher_weight)]
    for i, teacher_cfg in enumerate(cfg.teachers, 1):
        model = _extra_teacher(i, teacher_cfg, cfg, ctx, result)
        teachers.append(Teacher(model, teacher_cfg.weight))
    meta = ctx.meta()
    trained = train_students(
        cfg, splits, teachers, lambda: new_student(ctx), ctx.pipeline.student,
        lambda c: build(c, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"]),
        ctx.pipeline.seed, out, ctx.cache_dir() if cfg.cache_teacher else None,
        parallel=distributed.active())
    teacher_test = predict(ctx.teacher(), splits.x_test)
    for name, item in trained.items():
        _record(name, item, ctx, teacher_test, result)
    result.metrics.update(_teacher_comparison(result.metrics, teacher_test, splits.y_test, ctx))
    if len(teachers) > 1:
        ensemble = sum(t.weight * _probs(predict(t.model, splits.x_test)) for t in teachers)
        result.metrics["ensemble_accuracy"] = accuracy(ensemble, splits.y_test)
    return result


def methods(cfg: DistillStage) -> list[str]:
    """The methods a distill config combines, in the order the report lists them."""
    named = {"logit_kd": cfg.alpha > 0, "ensemble": bool(cfg.teachers),
             "hints": bool(cfg.hints), "attention": cfg.attention is not None,
             "relational": cfg.relational is not None, "assistants": bool(cfg.assistants),
             "self_distillation": cfg.self_distillation is not None,
             "mutual": cfg.mutual is not None}
    return [name for name, on in named.items() if on]


def teacher_outputs(ctx: Context, cached: bool):
    """soft(x, idx) -> teacher logits for a batch: looked up in the cache or computed online."""
    if cached:
        table = ctx.teacher_logits()
        return lambda x, idx: torch.from_numpy(np.ascontiguousarray(table[idx.numpy()])).to(
            x.device)
    teacher = ctx.teacher()

    def online(x, _idx):
        with torch.no_grad():
            return teacher(x.cpu()).to(x.device)

    return online


def new_student(ctx: Context):
    """The student at its starting point: the same weights for the KD run and the baseline."""
    meta = ctx.meta()
    cfg = ctx.pipeline.student
    set_seed(ctx.pipeline.seed)
    if cfg.checkpoint is not None:
        return load_model(ctx.resolve(cfg.checkpoint), cfg, meta)
    return build(cfg, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])


def _where(ctx: Context) -> str:
    index = next(i for i, s in enumerate(ctx.pipeline.stages) if s.kind == "distill")
    return f"{ctx.source}: stages[{index}]"


def _check_layers(cfg: DistillStage, ctx: Context) -> None:
    """Every layer path the config names must exist in the student / teacher."""
    errors = layer_errors(cfg, new_student(ctx), ctx.teacher())
    if errors:
        raise ConfigError([f"{_where(ctx)}.{line}" for line in errors])


def _extra_teacher(i: int, cfg: EnsembleTeacher, stage: DistillStage, ctx: Context,
                   result: StageResult):
    """Teacher i of `teachers:`, loaded from its checkpoint or trained here like the first."""
    splits, meta, out = ctx.splits(), ctx.meta(), ctx.stage_dir("distill")
    if cfg.checkpoint is not None:
        path = ctx.resolve(cfg.checkpoint)
        try:
            return load_model(path, cfg, meta).eval()
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError([f"{_where(ctx)}.teachers[{i - 1}].checkpoint: {path} cannot "
                               f"be loaded as arch {cfg.arch}: {first}"]) from None
    set_seed(ctx.pipeline.seed + i)
    model = build(cfg, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
    schedule = Schedule(cfg.train.epochs, cfg.train.lr, cfg.train.batch_size,
                        cfg.train.weight_decay)
    name = f"teacher_{i + 1}"
    result.history[name] = fit(model, hard_labels, splits.x_train, splits.y_train,
                               splits.x_val, splits.y_val, schedule, ctx.pipeline.seed + i,
                               out / f"{name}.ckpt", name, parallel=distributed.active())
    _save(model, cfg, ctx, name, result)
    result.metrics[f"{name}_accuracy"] = accuracy(predict(model, splits.x_test), splits.y_test)
    return model.eval()


def _save(model, cfg: ModelConfig, ctx: Context, name: str, result: StageResult) -> None:
    """Rank 0 writes the model; every rank then describes the same file."""
    path = ctx.stage_dir("distill") / f"{name}.pt"
    if distributed.is_leader():
        save_model(model, cfg, ctx.meta(), path)
    distributed.barrier()
    result.artifacts[f"{name}_fp32"] = Artifact.of(f"{name}_fp32", path, "torch")


def _record(name: str, item: Trained, ctx: Context, teacher_test, result: StageResult) -> None:
    splits = ctx.splits()
    _save(item.model, item.config or ctx.pipeline.student, ctx, name, result)
    if item.history:
        result.history[name] = item.history
    logits = predict(item.model, splits.x_test)
    prefix = "" if name == "student" else f"{name}_"
    result.metrics[f"{prefix}accuracy"] = accuracy(logits, splits.y_test)
    result.metrics[f"{prefix}ece"] = expected_calibration_error(logits, splits.y_test)
    result.metrics[f"{prefix}teacher_agreement"] = top1_agreement(logits, teacher_test)
    if name != "baseline":
        result.metrics[f"{prefix}params"] = count_params(item.model)
    if name == "student":
        result.metrics["student_params"] = result.metrics.pop("params")
        result.metrics["student_macs"] = count_macs(item.model, splits.input_shape)


def _probs(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _teacher_comparison(metrics: dict, teacher_test, labels, ctx: Context) -> dict:
    teacher_acc = accuracy(teacher_test, labels)
    teacher = ctx.teacher()
    out = {
        "teacher_accuracy": teacher_acc,
        "teacher_ece": expected_calibration_error(teacher_test, labels),
        "teacher_params": count_params(teacher),
        "teacher_macs": count_macs(teacher, ctx.splits().input_shape),
        "teacher_retention": metrics["accuracy"] / teacher_acc if teacher_acc else 0.0,
    }
    out["param_ratio"] = out["teacher_params"] / metrics["student_params"]
    if "baseline_accuracy" in metrics:
        # Every model the method trained, against the same hard-label baseline.
        base = metrics["baseline_accuracy"]
        out["kd_gain"] = metrics["accuracy"] - base
        for key in [k for k in metrics if k.endswith("_accuracy") and k != "baseline_accuracy"
                    and not k.startswith("teacher")]:
            out[key.removesuffix("_accuracy") + "_kd_gain"] = metrics[key] - base
    return out
