"""The same pipeline and seed give bit-identical model files on the same machine (teacher,
student, baseline, assistant), run after run."""

import subprocess
import sys

import pytest

PIPELINE = """\
name: same
seed: 3
teacher: {arch: cnn, width: 8, depth: 2, train: {epochs: 2, lr: 0.05, batch_size: 32}}
student: {arch: cnn, width: 4, depth: 2}
stages:
  - kind: distill
    epochs: 2
    lr: 0.05
    batch_size: 32
    check_export: false
    assistants: [{arch: cnn, width: 6, depth: 2}]
"""


@pytest.mark.slow
def test_two_runs_give_bit_identical_model_files(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    files = {}
    for out in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "edgekd", "run", "p.yaml", "--out", out],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        files[out] = {p.relative_to(tmp_path / out): p.read_bytes()
                      for p in (tmp_path / out).rglob("*.pt")}
    assert sorted(map(str, files["a"])) == ["distill/assistant_1.pt",
                                            "distill/baseline.pt", "distill/kd_student.pt",
                                            "distill/student.pt", "teacher/teacher.pt"]
    assert files["a"] == files["b"]
