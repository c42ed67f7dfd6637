"""export: write the deployable files and check each against the PyTorch model it came from.

Each artifact is run on the test split by its own runtime; the report gets its accuracy, its
top-1 agreement with its PyTorch source and the largest logit difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.artifacts import Artifact, StageResult, write_json
from edgekd.config import ExportStage
from edgekd.console import progress
from edgekd.context import Context
from edgekd.export import runtimes
from edgekd.export.writers import write_onnx, write_tflite
from edgekd.kd.train import predict
from edgekd.metrics import accuracy, max_abs_diff, top1_agreement
from edgekd.models import load_model
from edgekd.quant import qat
from edgekd.quant.onnx_qdq import optimize_qdq_onnx

FILE_NAMES = {
    "onnx_fp32": ("student_fp32_onnx", "student_fp32.onnx", "onnx"),
    "onnx_int8": ("student_int8_onnx", "student_int8.onnx", "onnx"),
    "tflite_fp32": ("student_fp32_tflite", "student_fp32.tflite", "tflite"),
    "tflite_int8": ("student_int8_tflite", "student_int8.tflite", "tflite"),
}


def run(cfg: ExportStage, ctx: Context) -> StageResult:
    splits, out = ctx.splits(), ctx.stage_dir("export")
    sources = _Sources(ctx)
    result = StageResult({}, {})
    logits = {}
    with progress(len(cfg.formats), "export") as bar:
        for fmt in cfg.formats:
            name, filename, kind = FILE_NAMES[fmt]
            bar.set_postfix_str(name)
            path = _write(fmt, out / filename, sources, cfg, ctx)
            result.artifacts[name] = Artifact.of(name, path, kind)
            logits[fmt] = runtimes.logits(path, splits.x_test)
            result.metrics.update(_compare(name, path, logits[fmt], sources.reference(fmt),
                                           splits))
            result.metrics.update({f"{name}.{k}": float(v) for k, v in op_counts(path).items()})
            bar.update(1)
    step = result.metrics.get("student_int8_tflite.output_step")
    if not sources.ptq and step and {"onnx_int8", "tflite_int8"} <= logits.keys():
        # Two independent integer engines, one quantized model: they should agree exactly;
        # where both differ from PyTorch alike, the difference is PyTorch's float emulation.
        result.metrics["student_int8_tflite.max_diff_steps_vs_onnx"] = max_abs_diff(
            logits["onnx_int8"], logits["tflite_int8"]) / step
    if cfg.validate_arch:
        result.notes += _validate_arch(cfg, ctx, result)
    meta = out / "student_meta.json"
    write_json(meta, {**ctx.meta(), "files": {a.name: a.path.name for a in
                                              result.artifacts.values()},
                      "note": "inputs are raw pixels in [0, 1], NCHW; the normalisation "
                              "(mean, std) is inside every file"})
    result.artifacts["student_meta"] = Artifact.of("student_meta", meta, "json")
    return result


def _write(fmt: str, path: Path, sources: _Sources, cfg: ExportStage, ctx: Context) -> Path:
    shape = ctx.splits().input_shape
    if fmt == "onnx_int8" and sources.ptq:
        return _onnx_ptq(path, sources, cfg, ctx)
    model = sources.model(fmt)
    if fmt.startswith("onnx"):
        write_onnx(model, shape, path, cfg.opset)
        if fmt == "onnx_int8":
            # int8 activations -> uint8, exactly: what onnxruntime's x86 kernels fuse.
            optimize_qdq_onnx(path)
        return path
    return write_tflite(model, shape, path, int8=fmt.endswith("int8"))


def _onnx_ptq(path: Path, sources: _Sources, cfg: ExportStage, ctx: Context) -> Path:
    """Post-training int8 ONNX: onnxruntime static QDQ on the fp32 file, with the pipeline's
    calibration method and options."""
    from edgekd.quant import ptq
    from edgekd.stages.quantize import calibration_samples

    fp32 = path.with_name(FILE_NAMES["onnx_fp32"][1])
    if not fp32.is_file():
        write_onnx(sources.model("onnx_fp32"), ctx.splits().input_shape, fp32, cfg.opset)
    quantize = ctx.pipeline.stage("quantize")
    options = quantize.calibration.model_dump(exclude={"samples"})
    return ptq.onnx_static(fp32, calibration_samples(ctx, quantize), path,
                           ptq.Calibration(**options))


def _validate_arch(cfg: ExportStage, ctx: Context, result: StageResult) -> list[str]:
    """Run each file with the arm64 builds of its runtime under qemu and compare with x86."""
    from edgekd.arch import validate

    notes = []
    for name, artifact in result.artifacts.items():
        doc = validate(artifact.path, cfg.validate_arch, ctx.test_npz(), cpu=cfg.validate_cpu)
        prefix = f"{name}.{cfg.validate_arch}"
        result.metrics[f"{prefix}_top1_agreement"] = doc["top1_agreement"]
        result.metrics[f"{prefix}_max_abs_diff"] = doc["max_abs_diff"]
        if not doc["passed"]:
            notes.append(f"{name}: {cfg.validate_arch} (emulated {cfg.validate_cpu}) differs "
                         f"from x86: {'; '.join(doc['reasons'])}")
    return notes


def op_counts(path: Path) -> dict[str, int]:
    """How much of the graph runs in int8 (and, for LiteRT, in how many delegate pieces)."""
    from edgekd.quant import graph

    return graph.onnx_op_counts(path) if path.suffix == ".onnx" else graph.tflite_op_counts(path)


class _Sources:
    """The PyTorch model behind each format and its test logits, built once each.

    The int8 formats come from the quantized model: ONNX from the folded conversion, TFLite
    from the unfolded one (what litert-torch expects). A post-training int8 ONNX file comes
    from the fp32 file, so it is compared with the fp32 model."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        quantize = ctx.pipeline.stage("quantize")
        self.ptq = quantize is not None and quantize.method == "ptq"
        self.models: dict[str, object] = {}
        self.logits: dict[str, np.ndarray] = {}

    def _key(self, fmt: str) -> str:
        if fmt.endswith("fp32") or (fmt == "onnx_int8" and self.ptq):
            return "fp32"
        return fmt

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


def _compare(name: str, path: Path, got: np.ndarray, reference: np.ndarray,
             splits) -> dict[str, float]:
    metrics = {
        f"{name}.accuracy": accuracy(got, splits.y_test),
        f"{name}.source_accuracy": accuracy(reference, splits.y_test),
        f"{name}.top1_agreement": top1_agreement(got, reference),
        f"{name}.max_abs_diff": max_abs_diff(got, reference),
        f"{name}.bytes": float(path.stat().st_size),
    }
    step = runtimes.output_step(path)
    if step is not None:
        # int8 kernels requantize with integer arithmetic; parity is judged in output steps.
        steps = np.abs(got - reference) / step
        metrics[f"{name}.output_step"] = step
        metrics[f"{name}.max_abs_diff_steps"] = float(steps.max())
        metrics[f"{name}.within_one_step"] = float(np.mean(steps <= 1.001))
    return metrics
