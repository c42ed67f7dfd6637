"""The distill stage's contract: the student and its hard-label baseline as intact torch
files, measured against the teacher it was given."""

import pytest

from edgekd.kd.train import predict
from edgekd.metrics import accuracy, top1_agreement
from edgekd.models import count_params, load_model


def test_distill_writes_student_and_baseline(distill, qat_ctx, splits):
    shipped_baseline = distill.info["shipped_student"] == "baseline"
    assert set(distill.artifacts) == {"student_fp32", "kd_student_fp32", "baseline_fp32"}
    assert distill.info["shipped"].startswith("hard-label" if shipped_baseline else "KD")
    shipped = distill.artifacts["baseline_fp32" if shipped_baseline else "kd_student_fp32"]
    assert distill.artifacts["student_fp32"].path.name == "student.pt"
    assert distill.artifacts["student_fp32"].sha256 == shipped.sha256
    assert {name: a.name for name, a in distill.artifacts.items()} == \
        {name: name for name in distill.artifacts}
    for artifact in distill.artifacts.values():
        assert artifact.format == "torch" and artifact.intact() and not artifact.deployable
        assert artifact.path.parent == qat_ctx.run_dir / "distill"
    student = load_model(distill.artifacts["student_fp32"].path)
    baseline = load_model(distill.artifacts["baseline_fp32"].path)
    m = distill.metrics
    assert accuracy(predict(student, splits.x_test), splits.y_test) == m["accuracy"]
    assert accuracy(predict(baseline, splits.x_test), splits.y_test) == m["baseline_accuracy"]
    assert m["baseline_val_accuracy"] > m["kd_val_accuracy"] or not shipped_baseline
    assert count_params(student) == m["student_params"] == count_params(baseline)


def test_distill_measures_against_the_teacher_it_was_given(distill, teacher, splits):
    m = distill.metrics
    assert m["teacher_accuracy"] == teacher.metrics["accuracy"]
    assert m["teacher_params"] == teacher.metrics["params"]
    assert m["teacher_macs"] == teacher.metrics["macs"]
    given = load_model(teacher.artifacts["teacher"].path)
    student = load_model(distill.artifacts["student_fp32"].path)
    assert m["teacher_agreement"] == top1_agreement(predict(student, splits.x_test),
                                                    predict(given, splits.x_test))


def test_distill_metrics_are_consistent_and_in_range(distill, qat_ctx):
    m = distill.metrics
    for key in ("accuracy", "baseline_accuracy", "teacher_agreement",
                "baseline_teacher_agreement", "ece", "baseline_ece"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["accuracy"] >= 0.8 and m["baseline_accuracy"] >= 0.8  # chance is 0.1
    assert m["teacher_retention"] == pytest.approx(m["accuracy"] / m["teacher_accuracy"])
    assert m["kd_gain"] == pytest.approx(m["kd_accuracy"] - m["baseline_accuracy"])
    assert m["param_ratio"] == pytest.approx(m["teacher_params"] / m["student_params"])
    assert m["student_params"] < m["teacher_params"] and m["student_macs"] < m["teacher_macs"]
    kd_ships = distill.info["shipped_student"] == "kd"
    close = "within noise" in distill.info["shipped"]
    shipped_as = " (shipped; the baseline's validation lead is within noise)" if close \
        else " (shipped)"
    assert distill.summary == {
        "KD student fp32 accuracy" + shipped_as * kd_ships: m["kd_accuracy"],
        "hard-label baseline accuracy" + " (shipped)" * (not kd_ships): m["baseline_accuracy"]}
    epochs = qat_ctx.pipeline.stage("distill").epochs
    assert {k: len(v) for k, v in distill.history.items()} == {"student": epochs,
                                                               "baseline": epochs}
    assert distill.evaluated == [] and distill.measured_on == "host"
    assert not distill.estimated and distill.warnings == []


def test_a_worse_kd_student_is_said_and_the_baseline_ships(tmp_path, splits):
    """A teacher at chance (one epoch at a tiny learning rate) and alpha 1: the KD student
    copies noise while the same student on hard labels learns; the stage says so and hands
    on the baseline (ship: best), or the KD student when the pipeline says ship: kd."""
    from stagekit import make_context, run_stage

    text = """\
name: worse
teacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 1, lr: 0.00001}}
student: {arch: cnn, width: 8, depth: 2}
stages:
  - {kind: distill, epochs: 3, lr: 0.05, batch_size: 32, alpha: 1.0, check_export: false}
"""
    results = {}
    for ship in ("best", "kd"):
        ctx = make_context(tmp_path / ship, text.replace("alpha: 1.0", f"alpha: 1.0, ship: {ship}"),
                           splits)
        teacher = run_stage("teacher", ctx.pipeline.teacher, {}, ctx)
        results[ship] = run_stage("distill", ctx.pipeline.stage("distill"),
                                  {"teacher": teacher}, ctx)
    best, kd = results["best"], results["kd"]
    (warning,) = best.warnings
    assert warning.startswith("distill: the KD student is worse than the same student trained "
                              "on hard labels") and "shipping the hard-label student" in warning
    assert best.artifacts["student_fp32"].sha256 == best.artifacts["baseline_fp32"].sha256
    assert best.metrics["accuracy"] == best.metrics["baseline_accuracy"] > 0.5
    assert best.metrics["kd_accuracy"] < 0.5 and best.metrics["kd_gain"] < 0
    assert best.info["shipped"].startswith("hard-label baseline (ship: best")
    assert kd.artifacts["student_fp32"].sha256 == kd.artifacts["kd_student_fp32"].sha256
    assert kd.metrics["accuracy"] < 0.5 and "shipping the KD student anyway" in kd.warnings[0]


def test_accuracies_at_chance_level_are_warnings():
    from edgekd.metrics import chance_warnings

    (warning,) = chance_warnings("quantize", {"accuracy": 0.11, "fp32_accuracy": 0.9,
                                              "student_int8_onnx.accuracy": 0.9}, 10)
    assert warning.startswith("quantize: accuracy 0.110 is at chance level (0.100 for 10 "
                              "classes)") and "BatchNorm" in warning
    assert chance_warnings("distill", {"accuracy": 0.6}, 2) == []
    assert len(chance_warnings("export", {"a.accuracy": 0.5, "b.accuracy": 0.54}, 2)) == 2


@pytest.mark.parametrize("kd, base, ships, says", [
    (0.90, 0.92, "kd", "the baseline's lead is within noise, so the KD student ships"),
    (0.80, 0.95, "baseline", None), (0.95, 0.90, "kd", None)])
def test_best_ships_the_baseline_only_beyond_noise(tmp_path, kd, base, ships, says):
    """`ship: best` on validation accuracies of 400 samples (noise about 0.04): a lead of the
    baseline within noise keeps the KD student (it swapped on any lead before, unsaid)."""
    from types import SimpleNamespace

    from edgekd.artifacts import Artifact, StageResult
    from edgekd.config import DistillStage
    from edgekd.stages.distill import settle

    files = {}
    for name in ("kd_student", "baseline"):
        (tmp_path / f"{name}.pt").write_bytes(name.encode())
        files[f"{name}_fp32"] = Artifact.of(f"{name}_fp32", tmp_path / f"{name}.pt", "torch")
    metrics = {"kd_val_accuracy": kd, "baseline_val_accuracy": base, "kd_accuracy": kd,
               "baseline_accuracy": base, "teacher_accuracy": 0.97, "kd_ece": 0.1,
               "baseline_ece": 0.2, "kd_teacher_agreement": 0.9,
               "baseline_teacher_agreement": 0.8}
    raw = StageResult(files, metrics, info={"val_samples": 400})
    ctx = SimpleNamespace(stage_dir=lambda kind: tmp_path)
    result = settle(DistillStage(kind="distill"), raw, ctx)
    assert result.info["shipped_student"] == ships
    assert (tmp_path / "student.pt").read_bytes() == (b"kd_student" if ships == "kd"
                                                      else b"baseline")
    assert result.metrics["accuracy"] == (kd if ships == "kd" else base)
    assert result.metrics["teacher_retention"] == pytest.approx(result.metrics["accuracy"] / 0.97)
    assert (says in result.info["shipped"]) if says else "within noise" not in result.info[
        "shipped"]
    assert len(result.warnings) == (ships == "baseline") and raw.warnings == []
    (label,) = [k for k in result.summary if k.startswith("KD student")]
    assert ("within noise" in label) == bool(says)
