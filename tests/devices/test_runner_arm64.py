"""The device runner under emulated arm64 (qemu-user, a Debian arm64 root with the aarch64
wheels) gives the same outputs as on x86. Emulated timings mean nothing; outputs do.

Reuses the cached arm64 root that edgekd.arch.sysroot prepares (once, about a minute, with
network) for `edgekd validate-arch`.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgekd.devices.measure import RUNNER, last_json


def run_native(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tflite_int8", "onnx_int8"])
def test_runner_gives_the_same_outputs_on_emulated_arm64(models, tmp_path, name):
    sysroot = pytest.importorskip("edgekd.arch.sysroot")
    if sysroot.missing_tools("arm64"):
        pytest.skip(f"needs {', '.join(sysroot.missing_tools('arm64'))}")
    try:
        root = sysroot.ensure("arm64")
    except sysroot.PrepareError as exc:  # no network to fetch the root the first time
        pytest.skip(f"arm64 root could not be prepared: {exc}")
    docs, logits = {}, {}
    for where in ("x86", "arm64"):
        out = tmp_path / f"{where}.npy"
        args = [str(models[name]), "--runs", "3", "--warmup", "1", "--data",
                str(models["data"]), "--outputs", str(out)]
        proc = run_native(args) if where == "x86" else \
            sysroot.run_python(root, [str(RUNNER), *args], cpu="cortex-a72", timeout=600)
        docs[where] = last_json(proc.stdout)
        assert docs[where] and docs[where]["ok"], proc.stdout + proc.stderr[-2000:]
        logits[where] = np.load(out)
    assert docs["arm64"]["machine"] == "aarch64" and docs["x86"]["machine"] == "x86_64"
    assert docs["arm64"]["runtime"] == docs["x86"]["runtime"]
    assert docs["arm64"]["accuracy"] == docs["x86"]["accuracy"]
    assert (logits["arm64"].argmax(1) == logits["x86"].argmax(1)).all()
    np.testing.assert_allclose(logits["arm64"], logits["x86"], atol=1e-5)
