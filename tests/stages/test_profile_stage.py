"""The profile stage's contract: every deployable artifact of its export input measured on the
target device (`local`: this machine, in a fresh process), nothing else; int8 speed-ups and
the slower-int8 warnings follow from the measured latencies by pure functions."""

import pytest
from stagekit import run_stage

from edgekd.artifacts import StageResult
from edgekd.stages.profile import slower_int8_warnings, speedups

MEASURED = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "load_ms", "peak_memory_mb",
            "accuracy")


def test_profile_measures_every_deployable_export_artifact_on_the_target(profile, export,
                                                                        splits):
    deployable = [n for n, a in export.artifacts.items() if a.deployable]
    assert sorted(profile.evaluated) == sorted(deployable) and "student_meta" not in deployable
    assert len(deployable) == 4
    assert profile.measured_on == "local" and not profile.estimated
    assert profile.info["device"] == "local" and profile.info["transport"] == "local"
    assert profile.artifacts == {}  # it measures files, it writes none
    for name in profile.evaluated:
        m = {k: profile.metrics[f"{name}.{k}"] for k in MEASURED}
        assert m["latency_ms_p50"] > 0 and m["load_ms"] > 0 and m["peak_memory_mb"] > 0
        assert m["latency_ms_p50"] <= m["latency_ms_p90"] <= m["latency_ms_p99"]
        assert profile.info["artifacts"][name]["measured"] is True
        # the same runtime on the same test split as export's host check (ties aside)
        assert abs(m["accuracy"] - export.metrics[f"{name}.accuracy"]) <= 2 / len(splits.y_test)


def test_profile_speedups_and_warnings_follow_from_its_latencies(profile):
    m = profile.metrics
    for int8, fp32 in (("student_int8_onnx", "student_fp32_onnx"),
                       ("student_int8_tflite", "student_fp32_tflite")):
        assert m[f"{int8}.int8_speedup"] == pytest.approx(
            m[f"{fp32}.latency_ms_p50"] / m[f"{int8}.latency_ms_p50"])
    assert {k: m[k] for k in m if k.endswith(".int8_speedup")} == speedups(m)
    suspect = [w for w in profile.warnings if ": result suspect: " in w]
    doubted = {name: a["suspect"] for name, a in profile.info["artifacts"].items()
               if a["suspect"]}
    assert profile.warnings == suspect + slower_int8_warnings(m, doubted)


def test_profile_measures_only_what_its_input_lists(export, qat_ctx):
    """An export result narrowed to one file: only that file is measured, and without its
    fp32 sibling there is no speed-up (the export folder on disk holds all four)."""
    narrowed = StageResult({k: export.artifacts[k] for k in ("student_int8_tflite",
                                                             "student_meta")})
    result = run_stage("profile", qat_ctx.pipeline.stage("profile"), {"export": narrowed},
                       qat_ctx)
    assert result.evaluated == ["student_int8_tflite"]
    assert {k.split(".")[0] for k in result.metrics} == {"student_int8_tflite"}
    assert "student_int8_tflite.int8_speedup" not in result.metrics


def test_speedups_pair_each_int8_file_with_its_fp32_sibling():
    metrics = {"student_fp32_onnx.latency_ms_p50": 2.0, "student_int8_onnx.latency_ms_p50": 0.5,
               "student_int8_tflite.latency_ms_p50": 1.0}  # no fp32 TFLite measured
    assert speedups(metrics) == {"student_int8_onnx.int8_speedup": 4.0}


def test_only_int8_slower_than_fp32_is_warned_about():
    warnings = slower_int8_warnings({"student_int8_onnx.int8_speedup": 0.5,
                                     "student_int8_tflite.int8_speedup": 1.5,
                                     "student_int8_onnx.latency_ms_p50": 0.1})
    assert len(warnings) == 1
    assert warnings[0].startswith("student_int8_onnx: int8 is SLOWER than fp32")
    assert "0.50x" in warnings[0]


def test_a_slower_int8_verdict_on_a_suspect_measurement_says_so():
    [warning] = slower_int8_warnings(
        {"student_int8_pte.int8_speedup": 0.62},
        {"student_fp32_pte": ["latency coefficient of variation 596% is above 25%"]})
    assert warning.startswith("student_int8_pte: int8 is SLOWER than fp32")
    assert "the measurement of student_fp32_pte is suspect" in warning

