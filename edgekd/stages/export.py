"""export: write the deployable files and check each against the PyTorch model it came from.

What each format is (file name, writer, runtime, op counter) comes from the export-format
table (edgekd.export.formats). Each file is run on the test split by its own runtime; the
report gets its accuracy, its top-1 agreement with its PyTorch source, the largest logit
difference and, for int8 outputs, the difference in output quantization steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import ExportStage
from edgekd.console import progress
from edgekd.context import Context
from edgekd.export.formats import FORMATS, RUNTIMES
from edgekd.export.writers import ExportSource, Written
from edgekd.files import write_json
from edgekd.kd.train import predict
from edgekd.metrics import accuracy, max_abs_diff, top1_agreement


def run(cfg: ExportStage, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Write each configured format from the fp32 student and the int8 model in `inputs`,
    run each file by its own runtime on the test split and compare it with the PyTorch model
    it came from; per-artifact metrics as `<artifact>.<metric>` (README, report.json)."""
    splits, out = ctx.splits(), ctx.stage_dir("export")
    x_test = splits.test.array()  # the runtimes take arrays: n x C x H x W float32
    source = _source(inputs, ctx)
    result = StageResult()
    written: dict[str, Written] = {}
    logits: dict[str, np.ndarray] = {}  # test logits per format
    references: dict[int, np.ndarray] = {}  # test logits per reference model, computed once
    with progress(len(cfg.formats), "export") as bar:
        for name in cfg.formats:
            fmt, runtime = FORMATS[name], RUNTIMES[FORMATS[name].runtime]
            bar.set_postfix_str(fmt.artifact)
            done = written[name] = fmt.write(source, out / fmt.filename, cfg.opset)
            result.artifacts[fmt.artifact] = Artifact.of(fmt.artifact, done.path, name)
            result.evaluated.append(fmt.artifact)
            result.info.setdefault("compared_with", {})[fmt.artifact] = \
                f"{done.reference_kind} PyTorch model"
            if id(done.reference) not in references:
                references[id(done.reference)] = _reference_logits(done, x_test)
            logits[name] = runtime.evaluate(done.path, x_test)
            result.metrics.update(_compare(fmt.artifact, done.path, logits[name],
                                           references[id(done.reference)], splits.y_test,
                                           runtime.output_scale(done.path)))
            if fmt.precision == "int8":  # against the fp32 student: what int8 cost this file
                if id(source.fp32) not in references:
                    references[id(source.fp32)] = _reference_logits(
                        Written(done.path, source.fp32, "fp32"), x_test)
                result.metrics[f"{fmt.artifact}.accuracy_drop"] = \
                    accuracy(references[id(source.fp32)], splits.y_test) \
                    - result.metrics[f"{fmt.artifact}.accuracy"]
            result.metrics.update({f"{fmt.artifact}.{k}": float(v)
                                   for k, v in runtime.op_counts(done.path).items()})
            result.warnings += _outside_delegate(fmt.artifact, done.path, runtime, result)
            bar.update(1)
    result.metrics.update(_int8_runtimes_agree(written, logits, result.metrics))
    result.info.update(_confusion(logits, splits.y_test, splits.classes))
    if cfg.validate_arch:
        result.warnings += _validate_arch(cfg, ctx, result)
    meta = out / "student_meta.json"
    write_json(meta, {**ctx.meta(), "files": {a.name: a.path.name for a in
                                              result.artifacts.values()},
                      "note": "inputs are raw pixels in [0, 1], NCHW; the normalisation "
                              "(mean, std) is inside every file"})
    result.artifacts["student_meta"] = Artifact.of("student_meta", meta, "json")
    result.summary = {label: result.metrics[key] for label, key in (
        ("int8 TFLite accuracy", "student_int8_tflite.accuracy"),
        ("int8 TFLite agreement w/ int8 torch", "student_int8_tflite.top1_agreement"),
        ("int8 .pte agreement w/ int8 torch", "student_int8_pte.top1_agreement"),
        ("int8 .pte ops in XNNPACK", "student_int8_pte.delegated_ops"))
        if key in result.metrics}
    return result


def _source(inputs: dict[str, StageResult], ctx: Context) -> ExportSource:
    from edgekd.quant import int8

    fp32 = ctx.load_model(inputs["distill"].artifacts["student_fp32"].path).eval()
    quantized = int8.load(inputs["quantize"].artifacts["student_int8"].path) \
        if "quantize" in inputs else None
    return ExportSource(fp32, quantized, ctx.splits().input_shape, ctx.calibration_samples)


def _reference_logits(written: Written, x: np.ndarray) -> np.ndarray:
    """Test logits of a file's reference model; converted int8 graphs have no train/eval
    switch (they always run as inference)."""
    if written.reference_kind == "int8":
        return predict(written.reference, x, mode=lambda _model, _training: None)
    return predict(written.reference, x)


def _confusion(logits: dict[str, np.ndarray], labels: np.ndarray, classes: list) -> dict:
    """Each file's confusion matrix on the test split (rows: true class, columns: predicted),
    for the report; none for more than 100 classes (a matrix nobody can read)."""
    k = len(classes)
    if k > 100:
        return {}
    rows = labels.astype(np.int64) * k
    counts = {FORMATS[name].artifact: np.bincount(rows + out.argmax(1), minlength=k * k)
              for name, out in logits.items()}
    return {"classes": list(classes),
            "confusion": {name: c.reshape(k, k).tolist() for name, c in counts.items()}}


def _int8_runtimes_agree(written: dict[str, Written], logits: dict[str, np.ndarray],
                         metrics: dict) -> dict[str, float]:
    """Independent integer engines, one int8 model: they should agree exactly; where they
    differ from PyTorch alike, the difference is PyTorch's float emulation. In output steps of
    the later file in the table, as `<artifact>.max_diff_steps_vs_<format>` (tflite vs onnx;
    pte vs onnx and vs tflite)."""
    int8 = [n for n in FORMATS if n in written and FORMATS[n].precision == "int8"
            and written[n].reference_kind == "int8"]
    out = {}
    for i, later in enumerate(int8):
        scale = metrics.get(f"{FORMATS[later].artifact}.output_scale")
        if not scale:
            continue
        for earlier in int8[:i]:
            key = f"{FORMATS[later].artifact}.max_diff_steps_vs_{earlier.removesuffix('_int8')}"
            out[key] = max_abs_diff(logits[earlier], logits[later]) / scale
    return out


def _outside_delegate(artifact: str, path: Path, runtime, result: StageResult) -> list[str]:
    """The ops a delegating runtime leaves to its own (slower) kernels, named: in the report's
    info and as a warning, so a failed `min_delegated_ops` gate says which ops to replace."""
    if not runtime.delegates or result.metrics.get(f"{artifact}.delegated_ops", 1.0) >= 1.0:
        return []
    ops = runtime.outside_delegate(path)
    result.info.setdefault("ops_outside_delegate", {})[artifact] = dict(ops)
    listed = ", ".join(f"{op} x{n}" for op, n in ops.most_common(8))
    more = f" and {len(ops) - 8} more kinds" if len(ops) > 8 else ""
    return [f"{artifact}: {sum(ops.values())} op(s) run outside the XNNPACK delegate, on the "
            f"runtime's own kernels: {listed}{more}"]


def _validate_arch(cfg: ExportStage, ctx: Context, result: StageResult) -> list[str]:
    """Run each file with the arm64 builds of its runtime under qemu and compare with x86;
    a file no emulated runtime takes (.pte) is a warning saying so."""
    from edgekd.arch import validate
    from edgekd.arch.validate import NOT_EMULATED

    warnings = []
    for name in result.evaluated:
        artifact = result.artifacts[name]
        if artifact.path.suffix in NOT_EMULATED:
            warnings.append(f"{name}: not validated on {cfg.validate_arch}: "
                            f"{NOT_EMULATED[artifact.path.suffix]}")
            continue
        doc = validate(artifact.path, cfg.validate_arch, ctx.test_npz(), cpu=cfg.validate_cpu)
        prefix = f"{name}.{cfg.validate_arch}"
        result.metrics[f"{prefix}_top1_agreement"] = doc["top1_agreement"]
        result.metrics[f"{prefix}_max_abs_diff"] = doc["max_abs_diff"]
        if not doc["passed"]:
            warnings.append(f"{name}: {cfg.validate_arch} (emulated {cfg.validate_cpu}) "
                            f"differs from x86: {'; '.join(doc['reasons'])}")
    return warnings


def _compare(name: str, path: Path, got: np.ndarray, reference: np.ndarray, labels: np.ndarray,
             scale: float | None) -> dict[str, float]:
    metrics = {
        f"{name}.accuracy": accuracy(got, labels),
        f"{name}.source_accuracy": accuracy(reference, labels),
        f"{name}.top1_agreement": top1_agreement(got, reference),
        f"{name}.max_abs_diff": max_abs_diff(got, reference),
        f"{name}.bytes": float(path.stat().st_size),
    }
    if scale is not None:
        # int8 kernels requantize with integer arithmetic; parity is judged in output steps.
        steps = np.abs(got - reference) / scale
        metrics[f"{name}.output_scale"] = scale
        metrics[f"{name}.max_abs_diff_steps"] = float(steps.max())
        metrics[f"{name}.within_one_step"] = float(np.mean(steps <= 1.001))
    return metrics
