"""The distill stage in 2 processes on CPU via torchrun (gloo): the report and every
checkpoint are written once, by rank 0, and accuracy is close to the single-process run."""

import json
import subprocess
import sys
from collections import Counter

import pytest

from edgekd.models import save_model

PIPELINE = """\
name: ddp
seed: 0
teacher: {arch: cnn, width: 16, depth: 2, checkpoint: teacher.pt}
student: {arch: cnn, width: 8, depth: 2}
target: local
stages:
  - kind: distill
    epochs: 4
    lr: 0.03
    batch_size: 32
    baseline: false
    hints: [{student: net.0.5, teacher: net.0.5, weight: 0.5}]
"""

# Logs every file write (torch.save, and edgekd's one atomic writer, through which every JSON
# and every temp-then-rename goes) with the writing rank; temp names lose their process id.
AUDIT = """\
import os
import re
import torch
import edgekd.files as files

LOG = os.environ["EDGEKD_WRITE_LOG"]


def _log(path):
    name = re.sub(r"\\.\\d+-[0-9a-f]+\\.tmp", ".tmp",
                  os.path.basename(str(getattr(path, "name", path))))
    with open(LOG, "a") as f:
        f.write(f"{os.environ.get('RANK', '-')} {name}\\n")


_save, _write_bytes = torch.save, files.write_bytes


def save(obj, f, *args, **kwargs):
    _log(f)
    return _save(obj, f, *args, **kwargs)


def write_bytes(path, data):
    _log(path)
    return _write_bytes(path, data)


torch.save, files.write_bytes = save, write_bytes
"""


def run(work, *args):
    env = {"PYTHONPATH": str(work / "audit"), "EDGEKD_WRITE_LOG": str(work / "writes.log"),
           "EDGEKD_PROGRESS": "0", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "edgekd", "run", "p.yaml", *args], cwd=work,
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_write_once_and_match_one_process(splits, teacher, tmp_path):
    save_model(teacher, splits.meta(),
               tmp_path / "teacher.pt")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "sitecustomize.py").write_text(AUDIT)

    two = run(tmp_path, "--nproc", "2", "--out", "runs/two")
    assert two.returncode == 0, two.stderr[-3000:]
    writes = (tmp_path / "writes.log").read_text().split("\n")[:-1]
    (tmp_path / "writes.log").unlink()
    one = run(tmp_path, "--out", "runs/one")
    assert one.returncode == 0, one.stderr[-3000:]
    single = (tmp_path / "writes.log").read_text().split("\n")[:-1]

    assert {line.split()[0] for line in writes} == {"0"}, writes  # rank 0 only
    counts = Counter(line.split()[1] for line in writes)
    assert counts["report.json"] == 1
    assert counts["stage.json"] == 2  # teacher and distill, once each
    assert counts[".student.tmp.ckpt"] == 4  # 4 epoch checkpoints
    assert counts[".kd_student.tmp.pt"] == 1  # then the model
    assert counts["student.pt"] == 1  # and its copy as the shipped student (ship:)
    assert not any(name.startswith(".baseline") for name in counts)
    assert counts == Counter(line.split()[1] for line in single)  # as one process writes
    assert not list((tmp_path / "runs/two").rglob("*.tmp*"))

    reports = [json.loads((tmp_path / f"runs/{n}/report.json").read_text()) for n in
               ("one", "two")]
    (m1,), (m2,) = [[s["metrics"] for s in r["stages"] if s["kind"] == "distill"]
                    for r in reports]
    assert m2["accuracy"] > 0.8
    assert abs(m2["accuracy"] - m1["accuracy"]) < 0.05
    history = [s["history"]["student"] for s in reports[1]["stages"] if s["kind"] == "distill"]
    assert len(history[0]) == 4 and history[0][-1]["loss_hint"] < history[0][0]["loss_hint"]
