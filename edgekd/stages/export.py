"""export: write the deployable files and check each against the PyTorch model it came from.

Each artifact is run on the test split by its own runtime; the report gets its accuracy, its
top-1 agreement with its PyTorch source and the largest logit difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import ExportStage
from edgekd.console import progress
from edgekd.context import Context
from edgekd.export import runtimes
from edgekd.export.writers import write_onnx, write_tflite
from edgekd.kd.train import predict
from edgekd.metrics import accuracy, max_abs_diff, top1_agreement
from edgekd.models import load_model
from edgekd.quant import qat

FILE_NAMES = {
    "onnx_fp32": ("student_fp32_onnx", "student_fp32.onnx", "onnx"),
    "onnx_int8": ("student_int8_onnx", "student_int8.onnx", "onnx"),
    "tflite_fp32": ("student_fp32_tflite", "student_fp32.tflite", "tflite"),
    "tflite_int8": ("student_int8_tflite", "student_int8.tflite", "tflite"),
}


def run(cfg: ExportStage, ctx: Context) -> StageResult:
    splits, out = ctx.splits(), ctx.stage_dir("export")
    shape = splits.input_shape
    sources = _Sources(ctx)
    result = StageResult({}, {})
    bar: tqdm
    with progress(len(cfg.formats), "export") as bar:
        for fmt in cfg.formats:
            name, filename, kind = FILE_NAMES[fmt]
            bar.set_postfix_str(name)
            path = out / filename
            model = sources.model(fmt)
            if kind == "onnx":
                write_onnx(model, shape, path, cfg.opset)
            else:
                write_tflite(model, shape, path, int8=fmt.endswith("int8"))
            result.artifacts[name] = Artifact.of(name, path, kind)
            result.metrics.update(_compare(name, path, sources.reference(fmt), splits))
            bar.update(1)
    return result


class _Sources:
    """The PyTorch model behind each format and its test logits, built once each.

    The int8 formats come from the QAT model: ONNX from the folded conversion, TFLite from the
    unfolded one (what litert-torch expects)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.models: dict[str, object] = {}
        self.logits: dict[str, np.ndarray] = {}

    def _key(self, fmt: str) -> str:
        return "fp32" if fmt.endswith("fp32") else fmt

    def model(self, fmt: str):
        key = self._key(fmt)
        if key not in self.models:
            if key == "fp32":
                artifact = self.ctx.results["distill"].artifacts["student_fp32"]
                self.models[key] = load_model(artifact.path).eval()
            else:
                from edgekd.stages.quantize import load_prepared

                prepared = load_prepared(self.ctx)
                self.models[key] = qat.convert(prepared, fold=(fmt == "onnx_int8"))
        return self.models[key]

    def reference(self, fmt: str) -> np.ndarray:
        key = self._key(fmt)
        if key not in self.logits:
            mode = (lambda m, t: m.train(t)) if key == "fp32" else (lambda m, t: None)
            self.logits[key] = predict(self.model(fmt), self.ctx.splits().x_test, mode=mode)
        return self.logits[key]


def _compare(name: str, path: Path, reference: np.ndarray, splits) -> dict[str, float]:
    got = runtimes.logits(path, splits.x_test)
    metrics = {
        f"{name}.accuracy": accuracy(got, splits.y_test),
        f"{name}.source_accuracy": accuracy(reference, splits.y_test),
        f"{name}.top1_agreement": top1_agreement(got, reference),
        f"{name}.max_abs_diff": max_abs_diff(got, reference),
        f"{name}.bytes": float(path.stat().st_size),
    }
    step = runtimes.output_step(path)
    if step is not None:
        metrics[f"{name}.output_step"] = step
    return metrics
