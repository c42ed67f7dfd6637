"""distill: train the student on the teacher's softened outputs, and the same student on hard
labels alone as the baseline it must beat."""

from __future__ import annotations

import torch

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import DistillStage
from edgekd.context import Context
from edgekd.kd import losses
from edgekd.kd.train import Schedule, fit, predict, set_seed
from edgekd.metrics import accuracy, expected_calibration_error, top1_agreement
from edgekd.models import build, count_macs, count_params, load_model, save_model


def run(cfg: DistillStage, ctx: Context) -> StageResult:
    splits, out = ctx.splits(), ctx.stage_dir("distill")
    schedule = Schedule(cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay)
    teacher_test = predict(ctx.teacher(), splits.x_test)
    soft = teacher_outputs(ctx, cfg.cache_teacher)

    def kd_loss(logits, x, y, idx):
        return losses.hinton(logits, soft(x, idx), y, cfg.temperature, cfg.alpha)

    def hard_loss(logits, _x, y, _idx):
        return losses.hinton(logits, None, y, 1.0, 0.0)

    trained = {"student": kd_loss}
    if cfg.baseline:
        trained["baseline"] = hard_loss
    result = StageResult({}, {})
    for name, loss in trained.items():
        model = new_student(ctx)
        result.history[name] = fit(model, loss, splits.x_train, splits.y_train, splits.x_val,
                                   splits.y_val, schedule, ctx.pipeline.seed,
                                   out / f"{name}.ckpt", name)
        path = out / f"{name}.pt"
        save_model(model, ctx.pipeline.student, ctx.meta(), path)
        result.artifacts[f"{name}_fp32"] = Artifact.of(f"{name}_fp32", path, "torch")
        logits = predict(model, splits.x_test)
        prefix = "" if name == "student" else f"{name}_"
        result.metrics[f"{prefix}accuracy"] = accuracy(logits, splits.y_test)
        result.metrics[f"{prefix}ece"] = expected_calibration_error(logits, splits.y_test)
        result.metrics[f"{prefix}teacher_agreement"] = top1_agreement(logits, teacher_test)
        if name == "student":
            result.metrics["student_params"] = count_params(model)
            result.metrics["student_macs"] = count_macs(model, splits.input_shape)
    result.metrics.update(_teacher_comparison(result.metrics, teacher_test, splits.y_test, ctx))
    return result


def teacher_outputs(ctx: Context, cached: bool):
    """soft(x, idx) -> teacher logits for a batch: looked up in the cache or computed online."""
    if cached:
        table = torch.from_numpy(ctx.teacher_logits())
        return lambda _x, idx: table[idx]
    teacher = ctx.teacher()

    def online(x, _idx):
        with torch.no_grad():
            return teacher(x)

    return online


def new_student(ctx: Context):
    """The student at its starting point: the same weights for the KD run and the baseline."""
    meta = ctx.meta()
    cfg = ctx.pipeline.student
    set_seed(ctx.pipeline.seed)
    if cfg.checkpoint is not None:
        return load_model(ctx.resolve(cfg.checkpoint), cfg, meta)
    return build(cfg, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])


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
        out["kd_gain"] = metrics["accuracy"] - metrics["baseline_accuracy"]
    return out
