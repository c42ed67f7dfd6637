"""A teacher given as the user's checkpoint, through the pipeline (no export: fast)."""

import json
import random
import subprocess
import sys

import pytest
import torch

from edgekd.models.builders import cnn

PIPELINE = """\
name: ckpt
teacher: {arch: cnn, width: 8, depth: 2, checkpoint: teacher.pt}
student: {arch: cnn, width: 4, depth: 2}
stages:
  - kind: distill
    epochs: 2
    baseline: false
"""


def run(cwd):
    return subprocess.run([sys.executable, "-m", "edgekd", "run", "p.yaml"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_state_dict_teacher_is_loaded_and_reported(tmp_path):
    torch.manual_seed(0)
    torch.save(cnn(10, 1, width=8, depth=2).state_dict(), tmp_path / "teacher.pt")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "runs/ckpt/report.json").read_text())
    teacher = report["stages"][0]
    assert teacher["kind"] == "teacher" and teacher["status"] == "done"
    assert teacher["metrics"]["params"] == sum(
        p.numel() for p in cnn(10, 1, width=8, depth=2).parameters())
    assert "baseline_accuracy" not in report["stages"][1]["metrics"]


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    torch.save(cnn(10, 1, width=16, depth=3).state_dict(), tmp_path / "teacher.pt")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    proc = run(tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert "teacher.checkpoint:" in line and "does not fit arch cnn" in line
    # The schema itself is fine; the checkpoint file is what is wrong.
    valid = subprocess.run([sys.executable, "-m", "edgekd", "validate", "p.yaml"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert valid.returncode == 0, valid.stderr[-2000:]


def test_checkpoint_for_another_class_count_names_both_counts(tmp_path):
    torch.save(cnn(5, 1, width=8, depth=2).state_dict(), tmp_path / "teacher.pt")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    proc = run(tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("p.yaml: teacher.checkpoint: ") and "does not fit arch cnn" in line
    assert "its classifier (3) has 5 outputs, the data has 10 classes" in line
    assert "reset_head: true" in line, line


TINY = """\
name: bad
data: {source: digits}
teacher: {arch: cnn, width: 4, depth: 1, checkpoint: CKPTMORE}
student: {arch: cnn, width: 2, depth: 1}
target: local
stages:
  - {kind: distill, epochs: 1}
"""


FINE_TUNED, TRUSTED = ", train: {epochs: 1}", ", trust_checkpoint: true, train: {epochs: 1}"


@pytest.mark.parametrize("name, more, says", [
    ("noise.pt", FINE_TUNED, "is not a PyTorch file"),
    ("notes.pt", TRUSTED, "is not a PyTorch file"),
    ("noise.safetensors", FINE_TUNED, "is not a safetensors file"),
    ("nan.pt", FINE_TUNED, "has 36 non-finite value(s) (NaN or inf) in 1 of "),
    ("huge.pt", "", "gives NaN or inf logits for "),
])
def test_a_checkpoint_that_is_no_model_is_one_line_and_exit_2(tmp_path, name, more, says):
    """Random bytes, text, weights with NaN, or finite weights so large that the logits
    overflow: exit 2 and one line naming the file and the field, with or without
    trust_checkpoint (never a traceback, nor advice to trust it)."""
    from click.testing import CliRunner

    from edgekd.cli import cli

    noise = random.Random(0).randbytes(4096)
    state = cnn(10, 1, width=4, depth=1).state_dict()
    state["0.0.weight"][:4, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    torch.save({k: v * 1e30 if v.is_floating_point() else v
                for k, v in cnn(10, 1, width=4, depth=1).state_dict().items()},
               tmp_path / "huge.pt")
    (tmp_path / "noise.pt").write_bytes(noise)
    (tmp_path / "noise.safetensors").write_bytes(noise)
    (tmp_path / "notes.pt").write_text("teacher trained on digits for 20 epochs\n")
    (tmp_path / "p.yaml").write_text(TINY.replace("CKPT", name).replace("MORE", more))
    run = CliRunner().invoke(cli, ["run", str(tmp_path / "p.yaml"), "--out",
                                   str(tmp_path / "run")])
    assert run.exit_code == 2, run.output
    *progress, line = run.output.strip().splitlines()
    # Read before any stage runs; only NaN logits need the stage's own measurement.
    assert progress == (["[teacher] running"] if name == "huge.pt" else []), run.output
    assert line.startswith(f"{tmp_path / 'p.yaml'}: teacher.checkpoint: {tmp_path / name} "
                           f"{says}"), line
    assert "trust_checkpoint" not in line and "Traceback" not in run.output
