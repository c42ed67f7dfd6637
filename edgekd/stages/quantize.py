"""quantize: int8 quantization-aware fine-tuning of the distilled student, teacher still on."""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import QuantizeStage
from edgekd.context import Context
from edgekd.kd import losses
from edgekd.kd.train import Schedule, fit, predict
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.models import load_model
from edgekd.quant import qat
from edgekd.stages.distill import teacher_outputs


def run(cfg: QuantizeStage, ctx: Context) -> StageResult:
    splits, out = ctx.splits(), ctx.stage_dir("quantize")
    student = load_model(ctx.results["distill"].artifacts["student_fp32"].path)
    prepared = qat.prepare(student, splits.input_shape)
    soft = teacher_outputs(ctx, cached=True)

    def kd_loss(logits, x, y, idx):
        return losses.hinton(logits, soft(x, idx), y, cfg.temperature, cfg.alpha)

    schedule = Schedule(cfg.epochs, cfg.lr, cfg.batch_size, 0.0)
    history = fit(prepared, kd_loss, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
                  schedule, ctx.pipeline.seed, out / "qat.ckpt", "qat",
                  mode=lambda m, training: qat.set_mode(m, training))
    path = out / "student_qat.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(prepared.state_dict(), tmp)
    tmp.replace(path)

    int8 = qat.convert(prepared, fold=True)
    logits = predict(int8, splits.x_test, mode=_no_mode)
    fp32_accuracy = ctx.results["distill"].metrics["accuracy"]
    metrics = {
        "accuracy": accuracy(logits, splits.y_test),
        "ece": expected_calibration_error(logits, splits.y_test),
        "fp32_accuracy": fp32_accuracy,
    }
    metrics["accuracy_drop"] = fp32_accuracy - metrics["accuracy"]
    return StageResult({"student_qat": Artifact.of("student_qat", path, "torch-qat-state")},
                       metrics, {"qat": history})


def _no_mode(_model, _training: bool) -> None:
    """Converted int8 graphs have no train/eval switch; they always run as inference."""


def load_prepared(ctx: Context) -> torch.fx.GraphModule:
    """The QAT model as the quantize stage left it (rebuilt deterministically, then loaded)."""
    student = load_model(ctx.results["distill"].artifacts["student_fp32"].path)
    prepared = qat.prepare(student, ctx.splits().input_shape)
    state_path: Path = ctx.results["quantize"].artifacts["student_qat"].path
    prepared.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    qat.set_mode(prepared, False)
    return prepared
