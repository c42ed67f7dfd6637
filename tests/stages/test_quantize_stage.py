"""The quantize stage's contract: one self-contained int8 file, for QAT and PTQ alike, whose
reloaded model reproduces exactly what the stage measured."""

import pytest

from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.quant import int8

METHODS = {"quantize": "qat", "ptq_quantize": "ptq"}


@pytest.fixture(params=sorted(METHODS))
def result(request):
    """(method, the quantize stage's result, its context)."""
    ctx = request.getfixturevalue("ptq_ctx" if request.param.startswith("ptq") else "qat_ctx")
    return METHODS[request.param], request.getfixturevalue(request.param), ctx


def test_one_intact_int8_file(result):
    _, quantized, ctx = result
    assert set(quantized.artifacts) == {"student_int8"}
    artifact = quantized.artifacts["student_int8"]
    assert artifact.format == "int8-graph" and artifact.intact() and not artifact.deployable
    assert artifact.path == ctx.run_dir / "quantize" / "student_int8.zip"


def test_the_file_says_how_it_was_made(result):
    method, quantized, ctx = result
    model = int8.load(quantized.artifacts["student_int8"].path)
    assert model.method == method
    if method == "ptq":
        assert model.calibration == ctx.pipeline.stage("quantize").calibration.model_dump()
        assert model.calibration["method"] == "minmax" and model.calibration["samples"] == 64
        assert "qat" not in quantized.history  # nothing trained
    else:
        assert model.calibration == {}
        assert len(quantized.history["qat"]) == ctx.pipeline.stage("quantize").epochs


def test_reloaded_file_reproduces_the_measured_accuracy_exactly(result, splits):
    _, quantized, _ = result
    model = int8.load(quantized.artifacts["student_int8"].path)
    logits = model.logits(splits.x_test)
    assert logits.shape == (len(splits.y_test), 10)
    assert accuracy(logits, splits.y_test) == quantized.metrics["accuracy"]
    assert expected_calibration_error(logits, splits.y_test) == quantized.metrics["ece"]


def test_metrics_against_the_fp32_student_it_was_given(result, distill):
    _, quantized, _ = result
    m = quantized.metrics
    assert set(m) == {"accuracy", "ece", "fp32_accuracy", "accuracy_drop"}
    assert m["fp32_accuracy"] == distill.metrics["accuracy"]
    assert m["accuracy_drop"] == pytest.approx(m["fp32_accuracy"] - m["accuracy"])
    assert abs(m["accuracy_drop"]) <= 0.05  # int8 of an 8x8 digits CNN loses next to nothing
    assert quantized.summary == {"student int8 accuracy (torch)": m["accuracy"]}
    assert quantized.evaluated == [] and quantized.measured_on == "host"
    assert not quantized.estimated and quantized.warnings == []


def test_ptq_reads_the_student_from_its_input_not_from_its_run_folder(ptq_quantize, ptq_ctx):
    # the PTQ pipeline's run folder has no teacher or distill stage: the student it quantized
    # can only have come from the distill result it was handed
    assert not (ptq_ctx.run_dir / "distill").exists()
    assert not (ptq_ctx.run_dir / "teacher").exists()
    assert ptq_quantize.artifacts["student_int8"].intact()
