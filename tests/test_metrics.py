"""edgekd.metrics: the chance-level warning covers every model a stage trained or wrote."""

from __future__ import annotations

from edgekd.metrics import chance_warnings


def test_the_kd_students_own_accuracy_is_checked_when_the_baseline_ships():
    """With `ship: best` choosing the baseline, `accuracy` is the baseline's and the KD
    student's is `kd_accuracy`: a KD student at chance was not warned about."""
    metrics = {"accuracy": 0.95, "baseline_accuracy": 0.95, "kd_accuracy": 0.1,
               "assistant0_accuracy": 0.12, "kd_val_accuracy": 0.1, "teacher_accuracy": 0.97}
    warnings = chance_warnings("distill", metrics, 10)
    assert [w.split()[1] for w in warnings] == ["kd_accuracy", "assistant0_accuracy"]


def test_accuracies_of_models_from_other_stages_are_theirs_to_warn_about():
    metrics = {"accuracy": 0.9, "fp32_accuracy": 0.1, "student_fp32_onnx.source_accuracy": 0.1,
               "student_fp32_onnx.accuracy": 0.1, "teacher_accuracy": 0.1}
    (warning,) = chance_warnings("export", metrics, 10)
    assert "student_fp32_onnx.accuracy 0.100" in warning
