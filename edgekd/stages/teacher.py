"""teacher: the user's teacher loaded (any model source), or trained / fine-tuned on the data
by the pipeline.

Either way it is saved in edgekd's model format and cached like any stage; the stages that
need it load it from this stage's `teacher` artifact. A loaded teacher is first measured on the
validation split: a teacher fed the wrong normalisation still runs, only worse, and everything
distilled from it inherits that, so a low score is a loud warning.
"""

from __future__ import annotations

import numpy as np

from edgekd import parallel
from edgekd.artifacts import Artifact, StageResult
from edgekd.config import TeacherConfig
from edgekd.context import Context
from edgekd.kd.methods import hard_labels
from edgekd.kd.train import Hyperparameters, fit, predict, set_seed, throughput
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.models import count_macs, count_params, describe, save_model
from edgekd.schema import ConfigError

SHORTFALL = 0.05
"""How far (absolute accuracy) below `expected_accuracy` a loaded teacher may score on the
validation split before edgekd warns."""


def run(cfg: TeacherConfig, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Load the user's teacher or train one; artifact `teacher` (edgekd's model format),
    metrics accuracy, ece, params, macs on the test split (and val_accuracy for a loaded one).

    Raises ConfigError naming the teacher's field when its spec cannot be built or its weights
    do not fit (edgekd.models.registry.build), or when a loaded teacher's logits are NaN or
    inf."""
    splits, meta = ctx.splits(), ctx.meta()
    out = ctx.stage_dir("teacher")
    set_seed(ctx.pipeline.seed)  # the initial weights (and any new head) are part of the seed
    model = ctx.build_model(cfg, "teacher", role="teacher")
    result = StageResult(info={**ctx.training_info(), "teacher": describe(model)},
                         warnings=list(splits.warnings))  # the data's, said once, here
    if cfg.train is not None:
        settings = Hyperparameters.of(cfg.train, ctx.pipeline.data)
        result.history["teacher"] = fit(model, hard_labels, splits, settings,
                                        ctx.pipeline.seed, out / "teacher.ckpt", "teacher",
                                        parallel=parallel.active(), compute=ctx.compute())
        result.info["images_per_s"] = throughput(result.history["teacher"])
    else:
        _check_loaded(cfg, model, ctx, result)
    path = out / "teacher.pt"
    parallel.on_leader(lambda: save_model(model, meta, path))
    logits = predict(model, splits.test, device=ctx.compute().device)
    result.metrics.update({
        "accuracy": accuracy(logits, splits.y_test),
        "ece": expected_calibration_error(logits, splits.y_test),
        "params": count_params(model),
        "macs": count_macs(model, splits.input_shape),
    })
    result.artifacts["teacher"] = Artifact.of("teacher", path, "torch")
    result.summary = {"teacher accuracy": result.metrics["accuracy"]}
    return result


def _check_loaded(cfg: TeacherConfig, model, ctx: Context, result: StageResult) -> None:
    """Measure a loaded teacher on the validation split; warn when it is far below what the
    user expects, or at chance level, naming the input normalisation as the first suspect.
    NaN or inf logits are a ConfigError: nothing can be distilled from them."""
    splits = ctx.splits()
    logits = predict(model, splits.val, device=ctx.compute().device)
    if not np.isfinite(logits).all():
        field = "weights" if cfg.weights is not None else "checkpoint"
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise ConfigError([f"{ctx.where('teacher')}.{field}: {ctx.resolve(getattr(cfg, field))} "
                           f"gives NaN or inf logits for {bad} of {len(logits)} validation "
                           "images: its weights overflow float32, or it is damaged"])
    val = accuracy(logits, splits.y_val)
    result.metrics["val_accuracy"] = val
    chance = 1.0 / len(splits.classes)
    expected = cfg.expected_accuracy
    if expected is not None and val < expected - SHORTFALL:
        problem = f"{val:.3f} on the validation split, far below the expected {expected:.3f}"
    elif val < 1.5 * chance:
        problem = f"{val:.3f} on the validation split, about chance ({chance:.3f})"
    else:
        return
    fed = result.info["teacher"]["input"]
    result.warnings.append(
        f"teacher: {problem}. Check its input first: edgekd feeds it {fed}; "
        "if it was trained with another normalisation, range, size or channel order, say so "
        "in teacher.input (mean, std, range, size, channel_order)")
