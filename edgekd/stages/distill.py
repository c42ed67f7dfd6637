"""distill: train the student from the teacher(s) with the configured KD terms, and the same
student on hard labels alone as the baseline it must beat.

Layer paths in the config are checked here, against the built models, before anything
trains: a wrong one is a ConfigError naming the file, the field and the nearest real paths.
(`edgekd validate` stays a pure schema check without torch.) Under `--nproc`, every rank runs
this function; rank 0 alone writes (edgekd.parallel.on_leader).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekd import parallel
from edgekd.artifacts import Artifact, StageResult
from edgekd.config import DistillStage, EnsembleTeacher, ModelConfig
from edgekd.context import Context
from edgekd.files import sha256_file, write_bytes
from edgekd.kd.methods import (
    Teacher,
    Trained,
    enabled_methods,
    hard_labels,
    layer_errors,
    train_students,
)
from edgekd.kd.train import Hyperparameters, fit, predict, set_seed, throughput
from edgekd.metrics import accuracy, expected_calibration_error, top1_agreement
from edgekd.models import count_macs, count_params, describe, save_model
from edgekd.schema import ConfigError


def run(cfg: DistillStage, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Distil the student (and any assistants, generation 1, peer) from the teacher in
    `inputs["teacher"]`, and train the hard-label baseline; artifacts `<name>_fp32`,
    metrics per model against the teacher and the baseline (README, report.json).

    Raises ConfigError naming the field for a checkpoint that cannot be loaded, before
    anything trains (layer paths and exportability: `check`, which the loop calls first)."""
    teacher = ctx.load_model(inputs["teacher"].artifacts["teacher"].path).eval()
    checked = _check_exportable(ctx) if cfg.check_export else None  # cached by then
    splits, out = ctx.splits(), ctx.stage_dir("distill")
    result = StageResult(info={"methods": enabled_methods(cfg), **ctx.training_info()})
    if checked is not None:
        result.info["export_check"] = "cached" if checked.get("cached") else \
            f"{checked['seconds']} s: " + ", ".join(checked["steps"])
    teachers = [Teacher(teacher, cfg.teacher_weight)]
    for i, teacher_cfg in enumerate(cfg.teachers, 1):
        model = _extra_teacher(i, teacher_cfg, ctx, result)
        teachers.append(Teacher(model, teacher_cfg.weight))
    trained = train_students(
        cfg, splits, teachers, lambda: new_student(ctx), ctx.pipeline.student,
        lambda c: _other_model(c, cfg, ctx), ctx.pipeline.seed, out, ctx.cache_dir(),
        parallel=parallel.active(), compute=ctx.compute(), data=ctx.pipeline.data)
    result.info["images_per_s"] = throughput(trained["student"].history)
    teacher_test = predict(teacher, splits.test, device=ctx.compute().device)
    for name, item in trained.items():
        _record(name, item, ctx, teacher_test, result)
    result.metrics.update(_teacher_comparison(result.metrics, teacher, teacher_test, ctx))
    for name in [n for n in ("student", "baseline") if n in trained]:
        result.metrics[f"{'kd' if name == 'student' else name}_val_accuracy"] = next(
            h["val_accuracy"] for h in trained[name].history if h.get("kept"))
    result.info["val_samples"] = len(splits.val.y)
    if len(teachers) > 1:
        ensemble = sum(t.weight * _probs(predict(t.model, splits.test,
                                                 device=ctx.compute().device))
                       for t in teachers)
        result.metrics["ensemble_accuracy"] = accuracy(ensemble, splits.y_test)
    return result


def settle(cfg: DistillStage, result: StageResult, ctx: Context) -> StageResult:
    """The distill result later stages, the gate and the report see: `result` (as `run` made
    it, fresh or cached) with the student `cfg.ship` names as `student_fp32`.

    `distill/student.pt` becomes a copy of the shipped student's file (`kd_student.pt` or
    `baseline.pt`, both kept), and `accuracy`, `ece`, `teacher_agreement` and
    `teacher_retention` become its figures. `best` ships the hard-label baseline only when it
    beats the KD student on the validation split beyond noise (two standard errors of the
    difference of two accuracies); within noise the KD student ships and the report says
    so (its summary line and `info["shipped"]`). A KD student worse than the baseline beyond
    noise is a warning, whatever `ship` says.
    Not part of the stage's cache key: changing `ship` retrains nothing."""
    m, shipped, close = dict(result.metrics), "kd", False
    warnings, info = list(result.warnings), dict(result.info)
    info["shipped"] = "KD student (no hard-label baseline was trained)"
    if "baseline_fp32" in result.artifacts:
        kd, base = m["kd_val_accuracy"], m["baseline_val_accuracy"]
        n = info["val_samples"]
        noise = max(2 * np.sqrt((kd * (1 - kd) + base * (1 - base)) / n), 1 / n)
        worse = base - kd > noise
        shipped = cfg.ship if cfg.ship != "best" else ("baseline" if worse else "kd")
        why = f"validation accuracy KD {kd:.4f}, baseline {base:.4f}, noise {noise:.4f}"
        if worse:
            warnings.append(
                f"distill: the KD student is worse than the same student trained on hard "
                f"labels ({kd:.3f} vs {base:.3f} on the validation split of {n}, beyond the "
                f"noise of {noise:.3f}). Likely causes: a capacity gap too wide for the "
                f"student, a temperature ({cfg.temperature:g}) or alpha ({cfg.alpha:g}) too "
                f"high for it, or too few epochs ({cfg.epochs}). Try a larger student, a "
                "teacher assistant (assistants:), a lower temperature or alpha, or more epochs"
                + ("; shipping the hard-label student" if shipped == "baseline"
                   else "; shipping the KD student anyway") + f" (ship: {cfg.ship})")
        elif cfg.ship == "best" and base > kd:
            why += "; the baseline's lead is within noise, so the KD student ships"
            close = True
        info["shipped"] = f"{_SHIPPED[shipped]} (ship: {cfg.ship}; {why})"
    source = result.artifacts["kd_student_fp32" if shipped == "kd" else "baseline_fp32"]
    path = ctx.stage_dir("distill") / "student.pt"
    if not (path.is_file() and sha256_file(path) == source.sha256):
        write_bytes(path, source.path.read_bytes())
    prefix = "" if shipped == "kd" else "baseline_"
    for key in ("accuracy", "ece", "teacher_agreement"):
        m[key] = m[f"{'kd_' if shipped == 'kd' else prefix}{key}"]
    m["teacher_retention"] = m["accuracy"] / m["teacher_accuracy"] if m["teacher_accuracy"] \
        else 0.0
    shipped_as = " (shipped; the baseline's validation lead is within noise)" if close \
        else " (shipped)"
    summary = {f"KD student fp32 accuracy{shipped_as * (shipped == 'kd')}": m["kd_accuracy"]}
    if "baseline_accuracy" in m:
        summary[f"hard-label baseline accuracy{' (shipped)' * (shipped == 'baseline')}"] = \
            m["baseline_accuracy"]
    info["shipped_student"] = shipped
    artifacts = {**result.artifacts, "student_fp32": dataclasses.replace(
        source, name="student_fp32", path=path)}
    return dataclasses.replace(result, artifacts=artifacts, metrics=m, warnings=warnings,
                               info=info, summary=summary)


_SHIPPED = {"kd": "KD student", "baseline": "hard-label baseline"}


def _file(name: str) -> str:
    """The file (and artifact) name of a trained model: the KD student is `kd_student`."""
    return "kd_student" if name == "student" else name


def check(cfg: DistillStage, inputs: dict[str, StageResult], ctx: Context) -> None:
    """Before the stage touches its folder: every layer path the config names exists in the
    built models, and (with `check_export`) the untrained student survives the later stages.
    Raises ConfigError naming the field, the nearest real paths or the format and op."""
    _check_layers(cfg, ctx, ctx.load_model(inputs["teacher"].artifacts["teacher"].path).eval())
    if cfg.check_export:
        _check_exportable(ctx)


def sizes(cfg: DistillStage, inputs: dict[str, StageResult], ctx: Context) -> dict[str, float]:
    """The student's size before training: student_params, student_macs and param_ratio
    (teacher / student parameters), for the size limits of the budget (the loop asks only
    when the budget has one)."""
    student = new_student(ctx)
    teacher = ctx.load_model(inputs["teacher"].artifacts["teacher"].path)
    params = count_params(student)
    return {"student_params": params, "param_ratio": count_params(teacher) / params,
            "student_macs": count_macs(student, ctx.splits().input_shape)}


def new_student(ctx: Context):
    """The student at its starting point: the same weights for the KD run and the baseline."""
    set_seed(ctx.pipeline.seed)
    return ctx.build_model(ctx.pipeline.student, "student")


def _other_model(model: ModelConfig, cfg: DistillStage, ctx: Context):
    """An assistant or the mutual peer. The default peer is the student's architecture with
    fresh weights (never the student's weights file: two equal starts would agree)."""
    where = ctx.stage_field("distill")
    if model is ctx.pipeline.student:
        fresh = model if model.source == "checkpoint" else \
            model.model_copy(update={"checkpoint": None, "weights": None})
        return ctx.build_model(fresh, f"{where}.mutual.peer")
    index = next((i for i, a in enumerate(cfg.assistants) if a is model), None)
    field = f"assistants[{index}]" if index is not None else "mutual.peer"
    return ctx.build_model(model, f"{where}.{field}")


def _check_layers(cfg: DistillStage, ctx: Context, teacher) -> None:
    """Every layer path the config names must exist in the student / teacher."""
    errors = layer_errors(cfg, new_student(ctx), teacher, ctx.splits().input_shape)
    if errors:
        raise ConfigError([f"{ctx.where('distill')}.{line}" for line in errors])


def _check_exportable(ctx: Context) -> dict:
    """The untrained student survives what the pipeline will do to it (capture, QAT
    preparation, each export format), or a ConfigError naming the format and the op; returns
    the check's steps and seconds (edgekd.export.check.cached_check)."""
    from edgekd.export.check import NotExportable, cached_check

    quantize = ctx.pipeline.stage("quantize")
    export = ctx.pipeline.stage("export")
    student = new_student(ctx)
    try:
        return cached_check(student, student.record, ctx.splits().input_shape,
                            ctx.meta()["num_classes"], list(export.formats) if export else [],
                            quantize.method if quantize else None,
                            opset=export.opset if export else 18)
    except NotExportable as exc:
        raise ConfigError([f"{ctx.source}: student: cannot be exported: {exc} (checked before "
                           f"training; `check_export: false` in {ctx.stage_field('distill')} "
                           "skips the check)"]) from None


def _extra_teacher(i: int, cfg: EnsembleTeacher, ctx: Context, result: StageResult):
    """Teacher i of `teachers:`, loaded from its weights or trained here like the first."""
    splits, out = ctx.splits(), ctx.stage_dir("distill")
    where = ctx.stage_field("distill")
    set_seed(ctx.pipeline.seed + i)
    model = ctx.build_model(cfg, f"{where}.teachers[{i - 1}]", role="teacher")
    if cfg.train is None:
        return model.eval()
    settings = Hyperparameters.of(cfg.train, ctx.pipeline.data)
    name = f"teacher_{i + 1}"
    result.history[name] = fit(model, hard_labels, splits, settings, ctx.pipeline.seed + i,
                               out / f"{name}.ckpt", name, parallel=parallel.active(),
                               compute=ctx.compute())
    _save(model, ctx, name, result)
    result.metrics[f"{name}_accuracy"] = accuracy(
        predict(model, splits.test, device=ctx.compute().device), splits.y_test)
    return model.eval()


def _save(model, ctx: Context, name: str, result: StageResult) -> None:
    """Rank 0 writes the model; every rank then describes the same file."""
    path = ctx.stage_dir("distill") / f"{name}.pt"
    parallel.on_leader(lambda: save_model(model, ctx.meta(), path))
    result.artifacts[f"{name}_fp32"] = Artifact.of(f"{name}_fp32", path, "torch")


def _record(name: str, item: Trained, ctx: Context, teacher_test, result: StageResult) -> None:
    splits = ctx.splits()
    _save(item.model, ctx, _file(name), result)
    if item.history:
        result.history[name] = item.history
    logits = predict(item.model, splits.test, device=ctx.compute().device)
    prefix = "kd_" if name == "student" else f"{name}_"
    result.metrics[f"{prefix}accuracy"] = accuracy(logits, splits.y_test)
    result.metrics[f"{prefix}ece"] = expected_calibration_error(logits, splits.y_test)
    result.metrics[f"{prefix}teacher_agreement"] = top1_agreement(logits, teacher_test)
    if name == "student":
        result.info["student"] = describe(item.model)
        result.metrics["student_params"] = count_params(item.model)
        result.metrics["student_macs"] = count_macs(item.model, splits.input_shape)
    elif name != "baseline":
        result.metrics[f"{prefix}params"] = count_params(item.model)


def _probs(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _teacher_comparison(metrics: dict, teacher, teacher_test, ctx: Context) -> dict:
    labels = ctx.splits().y_test
    teacher_acc = accuracy(teacher_test, labels)
    out = {
        "teacher_accuracy": teacher_acc,
        "teacher_ece": expected_calibration_error(teacher_test, labels),
        "teacher_params": count_params(teacher),
        "teacher_macs": count_macs(teacher, ctx.splits().input_shape),
    }
    out["param_ratio"] = out["teacher_params"] / metrics["student_params"]
    if "baseline_accuracy" in metrics:
        # Every model the method trained, against the same hard-label baseline.
        base = metrics["baseline_accuracy"]
        out["kd_gain"] = metrics["kd_accuracy"] - base
        for key in [k for k in metrics if k.endswith("_accuracy") and not k.startswith(
                ("teacher", "baseline", "kd_"))]:
            out[key.removesuffix("_accuracy") + "_kd_gain"] = metrics[key] - base
    return out
