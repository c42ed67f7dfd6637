"""Config errors for every method: schema problems at load time (no torch), layer paths that
the models lack when the distill stage starts, each one line naming file and field."""

import pytest
import torch

from edgekd.artifacts import Artifact, StageResult
from edgekd.config import ConfigError, load_pipeline
from edgekd.context import Context
from edgekd.models import save_model

HEAD = """\
name: t
teacher: {arch: cnn, width: 16, depth: 2, train: {epochs: 1}}
student: {arch: cnn, width: 8, depth: 2}
stages:
  - kind: distill
    epochs: 1
"""


def errors(tmp_path, extra: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + extra)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    return info.value.lines


@pytest.mark.parametrize("extra, expected", [
    ("    hints: [{student: net.0.5, teacher: net.0.5, wieght: 2}]\n",
     "stages[0].hints[0].wieght: unknown key (did you mean weight?)"),
    ("    hints: [{student: net.0.5, teacher: net.0.5, loss: l1}]\n",
     "stages[0].hints[0].loss: 'l1' is not one of mse, cosine"),
    ("    hints: [{student: net.0.5}]\n", "stages[0].hints[0].teacher: required key missing"),
    ("    attention: {pairs: []}\n", "stages[0].attention.pairs: List should have at least 1"),
    ("    relational: {student: net.2}\n",
     "stages[0].relational.student: give both student and teacher layers, or neither"),
    ("    teachers: [{arch: resnet81, train: {epochs: 1}}]\n",
     "stages[0].teachers[0].arch: unknown architecture 'resnet81' (did you mean resnet18?)"),
    ("    teachers: [{arch: cnn}]\n",
     "stages[0].teachers[0]: give the teacher trained weights (checkpoint: or weights:)"),
    ("    assistants: [{arch: cnn, widht: 12}]\n",
     "stages[0].assistants[0].widht: unknown key (did you mean width?)"),
    ("    assistants: [{arch: cnn}]\n    hints: [{student: net.0.5, teacher: net.0.5}]\n",
     "stages[0].assistants: a teacher-assistant chain distils logits"),
    ("    self_distillation: {teacher: mirror}\n",
     "stages[0].self_distillation.teacher: 'mirror' is not one of ema, checkpoint"),
    ("    self_distillation: {decay: 1.5}\n",
     "stages[0].self_distillation.decay: Input should be less than 1"),
    ("    mutual: {peer: {arch: cnn, width: 8}, temprature: 2}\n",
     "stages[0].mutual.temprature: unknown key (did you mean temperature?)"),
])
def test_schema_error_names_field(tmp_path, extra, expected):
    lines = errors(tmp_path, extra)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'p.yaml'}: {expected}"), lines[0]


def test_several_method_errors_reported_at_once(tmp_path):
    lines = errors(tmp_path, "    hints: [{student: a, teacher: b, wieght: 1}]\n"
                             "    relational: {teacher: net.2}\n    mutual: {wieght: 1}\n")
    assert len(lines) == 3


def run_distill_on(tmp_path, splits, teacher, extra: str):
    from edgekd.stages import distill

    path = tmp_path / "p.yaml"
    path.write_text(HEAD + extra)
    pipeline = load_pipeline(path)
    ctx = Context(pipeline, path, tmp_path / "run", "k")
    ctx._splits = splits
    teacher_path = tmp_path / "teacher.pt"
    save_model(teacher, splits.meta(), teacher_path)
    inputs = {"teacher": StageResult({"teacher": Artifact.of("teacher", teacher_path, "torch")})}
    distill.check(pipeline.stages[0], inputs, ctx)  # as the loop does, before the stage runs
    return distill.run(pipeline.stages[0], inputs, ctx)


def test_missing_layer_paths_name_field_and_nearest_real_paths(tmp_path, splits, teacher):
    extra = ("    hints: [{student: net.0.9, teacher: net.0.5}]\n"
             "    attention: {pairs: [{student: net.0.2, teacher: net.1.7}]}\n"
             "    relational: {student: net.2, teacher: nett.2}\n")
    with pytest.raises(ConfigError) as info:
        run_distill_on(tmp_path, splits, teacher, extra)
    source = tmp_path / "p.yaml"
    assert info.value.lines == [
        f"{source}: stages[0].hints[0].student: no module 'net.0.9' in the student "
        "(nearest: net.0.6, net.0.5, net.0.4)",
        f"{source}: stages[0].attention.pairs[0].teacher: no module 'net.1.7' in the teacher "
        "(nearest: net.1, net.0.6, net.0.5)",
        f"{source}: stages[0].relational.teacher: no module 'nett.2' in the teacher "
        "(nearest: net.2, net.0.2, net.3)"]
    assert not (tmp_path / "run" / "distill" / "student.ckpt").exists()  # nothing trained


def test_unloadable_ensemble_checkpoint_is_config_error(tmp_path, splits, teacher):
    bad = tmp_path / "bad.pt"
    torch.save({"net.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError) as info:
        run_distill_on(tmp_path, splits, teacher,
                       f"    teachers: [{{arch: cnn, checkpoint: {bad}}}]\n")
    (line,) = info.value.lines
    assert line.startswith(f"{tmp_path / 'p.yaml'}: stages[0].teachers[0].checkpoint: {bad}")


def test_assistant_checkpoint_that_does_not_fit_names_the_field(tmp_path, splits, teacher):
    bad = tmp_path / "assistant.pt"
    torch.save({"net.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError) as info:
        run_distill_on(tmp_path, splits, teacher, "    baseline: false\n"
                       f"    assistants: [{{arch: cnn, width: 16, depth: 2, checkpoint: {bad}}}]\n")
    (line,) = info.value.lines
    assert line.startswith(f"{tmp_path / 'p.yaml'}: stages[0].assistants[0].checkpoint: {bad}")


@pytest.mark.parametrize("field", ["assistants", "mutual"])
def test_assistant_and_peer_checkpoints_are_their_starting_points(field, tmp_path, splits,
                                                                   teacher):
    """A checkpoint on an assistant or the mutual peer is loaded, not ignored: with a learning
    rate too small to move it, the model stays as accurate as the trained file it starts from
    (a random start of the same architecture stays near chance)."""
    start = tmp_path / "start.pt"
    save_model(teacher, splits.meta(), start)
    spec = f"{{arch: cnn, width: 16, depth: 2, checkpoint: {start}}}"
    extra = f"    assistants: [{spec}]\n" if field == "assistants" else \
        f"    mutual: {{peer: {spec}}}\n"
    result = run_distill_on(tmp_path, splits, teacher,
                            "    baseline: false\n    lr: 1.0e-7\n" + extra)
    name = "assistant_1" if field == "assistants" else "peer"
    assert result.metrics[f"{name}_accuracy"] > 0.8
    (tmp_path / "random").mkdir()
    result = run_distill_on(tmp_path / "random", splits, teacher,
                            "    baseline: false\n    lr: 1.0e-7\n"
                            + extra.replace(f", checkpoint: {start}", ""))
    assert result.metrics[f"{name}_accuracy"] < 0.5
