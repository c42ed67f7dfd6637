"""quantize: int8 quantization-aware fine-tuning of the distilled student (teacher still on),
or post-training calibration for users who cannot fine-tune.

Either way the stage writes one self-contained int8 model file (edgekd.quant.int8), which the
export stage reads without knowing how it was made.
"""

from __future__ import annotations

import torch

from edgekd import parallel
from edgekd.artifacts import Artifact, StageResult
from edgekd.config import QuantizeStage
from edgekd.context import Context
from edgekd.kd import losses
from edgekd.kd.cache import LOGITS, TeacherOutputs
from edgekd.kd.train import Hyperparameters, fit, predict, throughput
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.quant import int8, ptq, qat


def run(cfg: QuantizeStage, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Quantize the distilled student in `inputs["distill"]` to int8 (QAT with the teacher's
    soft targets, or PTQ calibration) and write artifact `student_int8`
    (edgekd.quant.int8); metrics accuracy, ece, fp32_accuracy, accuracy_drop on the test
    split, from the converted int8 PyTorch model."""
    splits = ctx.splits()
    student = ctx.load_model(inputs["distill"].artifacts["student_fp32"].path)
    result = StageResult()
    if cfg.method == "qat":
        teacher = ctx.load_model(inputs["teacher"].artifacts["teacher"].path).eval()
        prepared = _qat(cfg, student, teacher, ctx, result)
        model = int8.from_prepared(prepared, "qat")
    else:
        samples = ctx.calibration_samples(cfg.calibration.samples)
        model = int8.from_prepared(ptq.pt2e_ptq(student, samples), "ptq",
                                   cfg.calibration.model_dump())
    path = ctx.stage_dir("quantize") / "student_int8.zip"
    parallel.on_leader(lambda: int8.save(model, path, splits.input_shape))
    result.artifacts["student_int8"] = Artifact.of("student_int8", path, "int8-graph")
    logits = predict(model.folded, splits.test, mode=lambda _model, _training: None)
    fp32_accuracy = inputs["distill"].metrics["accuracy"]
    result.metrics.update({
        "accuracy": accuracy(logits, splits.y_test),
        "ece": expected_calibration_error(logits, splits.y_test),
        "fp32_accuracy": fp32_accuracy,
    })
    result.metrics["accuracy_drop"] = fp32_accuracy - result.metrics["accuracy"]
    result.summary = {"student int8 accuracy (torch)": result.metrics["accuracy"]}
    return result


def _qat(cfg: QuantizeStage, student, teacher, ctx: Context,
         result: StageResult) -> torch.fx.GraphModule:
    """Fine-tune with fake-quant, the teacher's soft targets still in the loss."""
    splits, out = ctx.splits(), ctx.stage_dir("quantize")
    prepared = qat.prepare(student, splits.input_shape)
    settings = Hyperparameters.of(cfg, ctx.pipeline.data)
    # Augmented inputs are new every epoch: the teacher then runs on each batch.
    soft = TeacherOutputs(teacher, [LOGITS], splits.train,
                          None if settings.augment.random else ctx.cache_dir(),
                          ctx.compute().device)

    def kd_loss(logits, batch):
        targets = soft(batch.x, batch.index)[LOGITS.name]
        return losses.hinton(logits, targets, batch.y, cfg.temperature, cfg.alpha)

    result.info.update(ctx.training_info())
    result.history["qat"] = fit(prepared, kd_loss, splits, settings, ctx.pipeline.seed,
                                out / "qat.ckpt", "qat",
                                mode=lambda m, training: qat.set_mode(m, training),
                                parallel=parallel.active(), compute=ctx.compute())
    result.info["images_per_s"] = throughput(result.history["qat"])
    qat.set_mode(prepared, False)
    return prepared
