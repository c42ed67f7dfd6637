"""quantize: int8 quantization-aware fine-tuning of the distilled student (teacher still on),
or post-training calibration for users who cannot fine-tune."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import QuantizeStage
from edgekd.context import Context
from edgekd.kd import distributed, losses
from edgekd.kd.train import Schedule, fit, predict
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.models import load_model
from edgekd.quant import ptq, qat
from edgekd.stages.distill import teacher_outputs


def run(cfg: QuantizeStage, ctx: Context) -> StageResult:
    splits = ctx.splits()
    if cfg.method == "qat":
        prepared, result = _qat(cfg, ctx)
    else:
        prepared, result = ptq.pt2e_ptq(_student(ctx), calibration_samples(ctx, cfg)), \
            StageResult({}, {})
    int8 = qat.convert(prepared, fold=True)
    logits = predict(int8, splits.x_test, mode=_no_mode)
    fp32_accuracy = ctx.results["distill"].metrics["accuracy"]
    result.metrics.update({
        "accuracy": accuracy(logits, splits.y_test),
        "ece": expected_calibration_error(logits, splits.y_test),
        "fp32_accuracy": fp32_accuracy,
    })
    result.metrics["accuracy_drop"] = fp32_accuracy - result.metrics["accuracy"]
    return result


def _student(ctx: Context):
    return load_model(ctx.results["distill"].artifacts["student_fp32"].path)


def _qat(cfg: QuantizeStage, ctx: Context) -> tuple[torch.fx.GraphModule, StageResult]:
    """Fine-tune with fake-quant, the teacher's soft targets still in the loss."""
    distributed.dispatch("quantize", cfg, ctx)  # under torchrun the other ranks train with us
    splits, out = ctx.splits(), ctx.stage_dir("quantize")
    prepared = qat.prepare(_student(ctx), splits.input_shape)
    soft = teacher_outputs(ctx, cached=True)

    def kd_loss(logits, x, y, idx):
        return losses.hinton(logits, soft(x, idx), y, cfg.temperature, cfg.alpha)

    schedule = Schedule(cfg.epochs, cfg.lr, cfg.batch_size, 0.0)
    history = fit(prepared, kd_loss, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
                  schedule, ctx.pipeline.seed, out / "qat.ckpt", "qat",
                  mode=lambda m, training: qat.set_mode(m, training),
                  parallel=distributed.active())
    path = out / "student_qat.pt"
    if distributed.is_leader():
        tmp = path.with_suffix(".tmp")
        torch.save(prepared.state_dict(), tmp)
        tmp.replace(path)
    distributed.barrier()
    artifact = Artifact.of("student_qat", path, "torch-qat-state")
    return prepared, StageResult({"student_qat": artifact}, {}, {"qat": history})


def calibration_samples(ctx: Context, cfg: QuantizeStage) -> np.ndarray:
    """A fixed, seeded subset of the training split for post-training calibration."""
    x = ctx.splits().x_train
    rng = np.random.default_rng(ctx.pipeline.seed)
    count = min(cfg.calibration.samples, len(x))
    return x[np.sort(rng.choice(len(x), size=count, replace=False))]


def _no_mode(_model, _training: bool) -> None:
    """Converted int8 graphs have no train/eval switch; they always run as inference."""


def load_prepared(ctx: Context) -> torch.fx.GraphModule:
    """The quantized model as the quantize stage left it: QAT weights and fake-quant state
    loaded into the deterministically rebuilt graph, or the PTQ calibration redone (it is
    deterministic and takes seconds)."""
    cfg = ctx.pipeline.stage("quantize")
    if cfg.method == "ptq":
        return ptq.pt2e_ptq(_student(ctx), calibration_samples(ctx, cfg))
    prepared = qat.prepare(_student(ctx), ctx.splits().input_shape)
    state_path: Path = ctx.results["quantize"].artifacts["student_qat"].path
    prepared.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    qat.set_mode(prepared, False)
    return prepared
