"""The teacher stage's contract: one intact torch artifact that is the model it measured."""

from edgekd.kd.train import predict
from edgekd.metrics import accuracy
from edgekd.models import count_params, load_model


def test_teacher_writes_the_model_it_measured(teacher, qat_ctx, splits):
    assert set(teacher.artifacts) == {"teacher"}
    artifact = teacher.artifacts["teacher"]
    assert artifact.format == "torch" and artifact.intact() and not artifact.deployable
    assert artifact.path.parent == qat_ctx.run_dir / "teacher"
    model = load_model(artifact.path)
    # the file is the model the metrics describe, not a later or earlier state of it
    assert accuracy(predict(model, splits.x_test), splits.y_test) == teacher.metrics["accuracy"]
    assert teacher.metrics["params"] == count_params(model)


def test_teacher_metrics_and_record(teacher, qat_ctx):
    m = teacher.metrics
    assert set(m) == {"accuracy", "ece", "params", "macs"}
    assert 0.85 <= m["accuracy"] <= 1.0  # ten classes: chance is 0.1
    assert 0.0 <= m["ece"] <= 1.0
    assert m["macs"] > m["params"] > 0  # convolutions reuse their weights across the map
    assert teacher.summary == {"teacher accuracy": m["accuracy"]}
    epochs = qat_ctx.pipeline.teacher.train.epochs
    assert [h["epoch"] for h in teacher.history["teacher"]] == list(range(1, epochs + 1))
    assert teacher.evaluated == [] and teacher.measured_on == "host"
    assert not teacher.estimated and teacher.warnings == []


def test_what_the_data_warns_of_is_in_the_teacher_stage_report(tmp_path, splits):
    """A given val split repeating a few training samples is said once, by the first stage
    (edgekd.data.leakage finds it; Splits.warnings carries it)."""
    import dataclasses

    from stagekit import QAT, make_context, run_stage

    said = "data.val: val.npz: 1 of its 20 samples are identical to training samples"
    warned = dataclasses.replace(splits, warnings=[said])
    ctx = make_context(tmp_path, QAT.replace("train: {epochs: 3", "train: {epochs: 1"), warned)
    result = run_stage("teacher", ctx.pipeline.teacher, {}, ctx)
    assert result.warnings[:1] == [said]
