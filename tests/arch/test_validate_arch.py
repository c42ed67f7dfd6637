"""`edgekd validate-arch` on int8 students, under real qemu in a real arm64 root.

The students come from the project's own QAT recipe (edgekd.quant.qat, edgekd.export.writers)
on the digits data, as the demo pipeline makes them. The arm64 root is the user's cached one
(prepared on first use, about 30 s here), so only the first run pays for it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.arch.commands import validate_arch_command

pytestmark = pytest.mark.slow

NEEDED = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap",
          "dpkg-deb": "dpkg"}


@pytest.fixture(scope="module", autouse=True)
def emulation_tools():
    missing = [f"{tool} ({package})" for tool, package in NEEDED.items()
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"validate-arch needs {', '.join(missing)}: run `make test-deps` "
                    "(apt-get install qemu-user-static debootstrap)")


@pytest.fixture(scope="session")
def students(tmp_path_factory):
    """An int8 TFLite and an int8 ONNX of one QAT-trained small CNN, and its test data."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    from edgekd.export.writers import write_onnx, write_tflite
    from edgekd.quant import qat

    out = tmp_path_factory.mktemp("students")
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    np.savez(out / "test.npz", x=x[test], y=y[test])

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])

    def fit(module, epochs, lr):
        optimiser = torch.optim.Adam(module.parameters(), lr)
        for _ in range(epochs):
            for i in range(0, len(xt), 64):
                loss = nn.functional.cross_entropy(module(xt[i:i + 64]), yt[i:i + 64])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    fit(model, 8, 1e-2)
    prepared = qat.prepare(model, (1, 8, 8))
    fit(prepared, 1, 1e-3)
    write_onnx(qat.convert(prepared, fold=True), (1, 8, 8), out / "student_int8.onnx", 18)
    write_tflite(qat.convert(prepared, fold=False), (1, 8, 8), out / "student_int8.tflite",
                 int8=True)
    return out


@pytest.mark.parametrize("name", ["student_int8.tflite", "student_int8.onnx"])
def test_int8_student_agrees_with_x86_under_arm64_emulation(students, name, tmp_path):
    report = tmp_path / "result.json"
    result = CliRunner().invoke(validate_arch_command, [
        str(students / name), "--arch", "arm64", "--data", str(students / "test.npz"),
        "--json", str(report)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["passed"] and doc["top1_agreement"] >= 0.99
    assert doc["samples"] == 397
    # really emulated: the runner saw an aarch64 machine, and the model really classifies
    assert doc["emulated"]["machine"] == "aarch64" and doc["native"]["machine"] == "x86_64"
    assert doc["emulated"]["accuracy"] > 0.85
    assert doc["emulated"]["runtime"] == ("onnxruntime" if name.endswith(".onnx")
                                          else "ai_edge_litert")
    assert "verdict: PASS" in result.output


def test_a_verdict_that_cannot_be_met_exits_3(students):
    result = CliRunner().invoke(validate_arch_command, [
        str(students / "student_int8.tflite"), "--cpu", "cortex-a76", "--min-agreement", "1",
        "--max-abs-diff", "-1"])
    assert result.exit_code == 3, result.output
    assert "verdict: FAIL (max abs logit diff" in result.output
    assert "random: 100 samples" in result.output
