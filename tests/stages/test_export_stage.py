"""The export stage's contract: the files the format table names, each intact and checked on
its own runtime against the PyTorch model it came from; how the int8 model was made (QAT or
PTQ) is read from the quantize input's file, never from the pipeline's quantize config."""

import json

import numpy as np
import pytest
from stagekit import NO_QUANTIZE, make_context, run_stage

from edgekd.config import ExportStage
from edgekd.export.formats import FORMATS, RUNTIMES
from edgekd.kd.train import predict
from edgekd.metrics import accuracy, max_abs_diff
from edgekd.models import load_model
from edgekd.quant import int8


def file_logits(result, name: str, x: np.ndarray) -> np.ndarray:
    """Test logits of the file of format `name`, run again by its own host runtime."""
    artifact = result.artifacts[FORMATS[name].artifact]
    return RUNTIMES[FORMATS[name].runtime].evaluate(artifact.path, x)


def fp32_logits(distill, x: np.ndarray) -> np.ndarray:
    return predict(load_model(distill.artifacts["student_fp32"].path), x)


def int8_logits(quantize, x: np.ndarray) -> np.ndarray:
    return int8.load(quantize.artifacts["student_int8"].path).logits(x)


def assert_compared_with(result, name: str, got: np.ndarray, reference: np.ndarray,
                         other: np.ndarray, labels: np.ndarray) -> None:
    """The file of format `name` was checked against `reference`, not against `other`."""
    prefix, m = FORMATS[name].artifact, result.metrics
    assert m[f"{prefix}.accuracy"] == accuracy(got, labels)
    assert m[f"{prefix}.source_accuracy"] == accuracy(reference, labels)
    assert m[f"{prefix}.max_abs_diff"] == pytest.approx(max_abs_diff(got, reference), abs=1e-5)
    # the two candidate references really give different figures, so the line above decides
    assert abs(max_abs_diff(got, other) - max_abs_diff(got, reference)) > 1e-3


def assert_files_as_the_table_names_them(result, formats: list[str], ctx) -> None:
    assert set(result.artifacts) == {FORMATS[n].artifact for n in formats} | {"student_meta"}
    assert result.evaluated == [FORMATS[n].artifact for n in formats]
    for name in formats:
        fmt = FORMATS[name]
        artifact = result.artifacts[fmt.artifact]
        assert artifact.format == name and artifact.deployable and artifact.intact()
        assert artifact.path == ctx.run_dir / "export" / fmt.filename
        assert result.metrics[f"{fmt.artifact}.bytes"] == artifact.bytes
    meta = result.artifacts["student_meta"]
    assert meta.format == "json" and meta.intact() and not meta.deployable
    doc = json.loads(meta.path.read_text())
    assert doc["files"] == {a.name: a.path.name for a in result.artifacts.values()
                            if a.name != "student_meta"}
    assert doc["num_classes"] == 10 and doc["input_shape"] == [1, 8, 8]


def test_qat_export_writes_every_format_of_the_table(export, qat_ctx):
    assert_files_as_the_table_names_them(export, qat_ctx.pipeline.stage("export").formats,
                                         qat_ctx)
    assert export.measured_on == "host" and not export.estimated and export.warnings == []
    assert not [k for k in export.metrics if ".arm64_" in k]  # validate_arch is off
    assert export.summary == {
        "int8 TFLite accuracy": export.metrics["student_int8_tflite.accuracy"],
        "int8 TFLite agreement w/ int8 torch": export.metrics["student_int8_tflite.top1_agreement"]}


def test_qat_files_match_their_sources(export, distill, quantize, splits):
    x, y, m = splits.x_test, splits.y_test, export.metrics
    fp32, q8 = fp32_logits(distill, x), int8_logits(quantize, x)
    for name in ("onnx_fp32", "tflite_fp32"):
        got = file_logits(export, name, x)
        assert_compared_with(export, name, got, fp32, q8, y)
        prefix = FORMATS[name].artifact
        assert m[f"{prefix}.top1_agreement"] == 1.0 and m[f"{prefix}.max_abs_diff"] < 1e-4
        assert m[f"{prefix}.ops_int8"] == 0 and f"{prefix}.output_scale" not in m
    for name in ("onnx_int8", "tflite_int8"):  # QAT: both come from the one int8 model
        got = file_logits(export, name, x)
        assert_compared_with(export, name, got, q8, fp32, y)
        prefix = FORMATS[name].artifact
        assert m[f"{prefix}.top1_agreement"] >= 0.99
        assert m[f"{prefix}.output_scale"] > 0 and m[f"{prefix}.within_one_step"] >= 0.99
        assert m[f"{prefix}.ops_float"] == 0 and m[f"{prefix}.ops_int8"] >= 4
        assert abs(m[f"{prefix}.accuracy"] - distill.metrics["accuracy"]) <= 0.05
    # two integer engines running one int8 model agree to within one output step
    assert m["student_int8_tflite.max_diff_steps_vs_onnx"] <= 1.0 + 1e-3


def test_ptq_export_compares_onnx_with_fp32_and_tflite_with_int8(ptq_export, ptq_quantize,
                                                                  distill, ptq_ctx, splits):
    assert int8.load(ptq_quantize.artifacts["student_int8"].path).method == "ptq"
    assert_files_as_the_table_names_them(ptq_export, ["onnx_int8", "tflite_int8"], ptq_ctx)
    x, y, m = splits.x_test, splits.y_test, ptq_export.metrics
    fp32, q8 = fp32_logits(distill, x), int8_logits(ptq_quantize, x)
    # onnxruntime calibrated the fp32 file itself; the TFLite converted the PT2E int8 model
    assert_compared_with(ptq_export, "onnx_int8", file_logits(ptq_export, "onnx_int8", x),
                         fp32, q8, y)
    assert_compared_with(ptq_export, "tflite_int8", file_logits(ptq_export, "tflite_int8", x),
                         q8, fp32, y)
    for prefix in ("student_int8_onnx", "student_int8_tflite"):
        assert m[f"{prefix}.top1_agreement"] >= 0.95
        assert abs(m[f"{prefix}.accuracy"] - distill.metrics["accuracy"]) <= 0.05
        assert m[f"{prefix}.ops_int8"] >= 4
        # what int8 cost each shipped file, by its own runtime, against the fp32 student
        assert m[f"{prefix}.accuracy_drop"] == pytest.approx(
            accuracy(fp32, y) - m[f"{prefix}.accuracy"])
    assert m["student_int8_tflite.within_one_step"] >= 0.99
    # the two files do not come from one int8 model: no step comparison between them
    assert "student_int8_tflite.max_diff_steps_vs_onnx" not in m
    assert ptq_export.warnings == []


@pytest.mark.parametrize("quantized, reference", [("quantize", "int8"), ("ptq_quantize", "fp32")])
def test_export_reads_quantize_only_from_its_input(quantized, reference, request, distill,
                                                   splits, tmp_path):
    """Under a pipeline with no quantize stage at all, export still writes the int8 ONNX the
    way the quantize input's file says (QAT: from the int8 model; PTQ: calibrated fp32)."""
    result_of_quantize = request.getfixturevalue(quantized)
    ctx = make_context(tmp_path, NO_QUANTIZE, splits)
    assert ctx.pipeline.stage("quantize") is None
    cfg = ExportStage(kind="export", formats=["onnx_int8"])
    result = run_stage("export", cfg, {"distill": distill, "quantize": result_of_quantize}, ctx)
    assert_files_as_the_table_names_them(result, ["onnx_int8"], ctx)
    x = splits.x_test
    fp32, q8 = fp32_logits(distill, x), int8_logits(result_of_quantize, x)
    expected, other = (q8, fp32) if reference == "int8" else (fp32, q8)
    assert_compared_with(result, "onnx_int8", file_logits(result, "onnx_int8", x), expected,
                         other, splits.y_test)
    assert result.metrics["student_int8_onnx.top1_agreement"] >= 0.95
