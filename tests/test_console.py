"""edgekd.console: the libraries' start-up notices stay off the terminal unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("os.fork() was called", "_pytree.py", "absl::InitializeLog", "oneDNN custom operations")
"""What JAX, torch (for torchao) and TensorFlow printed during a run with a quantize stage."""

PIPELINE = """\
name: quiet
data: {source: folder, path: imgs, image_size: [16, 16]}
teacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 1}}
student: {arch: cnn, width: 2, depth: 1}
stages:
  - {kind: distill, epochs: 1, baseline: false}
  - {kind: quantize, method: qat, epochs: 1}
  - {kind: export, formats: [onnx_fp32, tflite_int8]}
"""


SET_BY_EDGEKD = ("EDGEKD_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")


def _edgekd(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in SET_BY_EDGEKD}
    env = {**inherited, "EDGEKD_PROGRESS": "0", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_run_with_a_quantize_stage_on_folder_data_prints_no_library_noise(tmp_path):
    """Two runs: the first with an empty export-check cache (JAX is imported before the
    DataLoader workers fork), the second with it warm and the quantize stage forced (torchao
    and TensorFlow are then first imported outside the converters' silencing)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "abc":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(
                tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    cache = {"EDGEKD_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for args in (["run", "p.yaml", "--out", "run"],
                 ["run", "p.yaml", "--out", "run", "--force", "quantize"]):
        done = _edgekd(args, tmp_path, **cache)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "[quantize] done" in output and "verdict: PASS" in output
        assert not [n for n in NOISE if n in output], output


def test_verbose_keeps_the_libraries_warnings_and_edgekd_keeps_its_own():
    code = """if True:
        import sys, warnings
        from edgekd.console import hush_libraries
        hush_libraries(verbose=sys.argv[1] == "1")
        warnings.warn("os.fork() was called. JAX is multithreaded", RuntimeWarning)
        warnings.warn("edgekd: its own warning", UserWarning)
        import logging; logging.getLogger("torch.utils._pytree").warning("pytree notice")
    """
    for verbose in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if k != "EDGEKD_VERBOSE"}
        done = subprocess.run([sys.executable, "-c", code, verbose], capture_output=True,
                              text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert "its own warning" in done.stderr
        shown = verbose == "1"
        assert ("os.fork() was called" in done.stderr) is shown, done.stderr
        assert ("pytree notice" in done.stderr) is shown, done.stderr
