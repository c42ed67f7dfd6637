"""A teacher given as the user's checkpoint, through the pipeline (no export: fast)."""

import json
import subprocess
import sys

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
