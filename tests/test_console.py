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


def test_a_value_of_any_length_is_clipped_in_the_middle_of_its_line():
    from edgekd.console import LINE_MAX, WORD_MAX, fit

    path = "d/" * 1_500_000 + "x.npz"  # 3 MB
    line = fit(f"p.yaml: data.path: {path} not found")
    assert line.startswith("p.yaml: data.path: d/d/") and line.endswith("d/x.npz not found")
    assert "..." in line and len(line) == len("p.yaml: data.path:  not found") + WORD_MAX
    assert fit("p.yaml: seed: must be >= 0") == "p.yaml: seed: must be >= 0"
    assert fit(f"a: {path}\nb: short").split("\n")[1] == "b: short"
    many = fit(" ".join(["w" * WORD_MAX] * 10_000))  # no word too long, the line is
    assert len(many) == LINE_MAX and many.startswith("www") and many.endswith("www")


def test_a_message_quoting_a_huge_path_from_the_users_files_is_one_short_line(tmp_path):
    """A manifest row naming a path of megabytes was echoed whole: a 314 MB error line."""
    import json

    from click.testing import CliRunner

    from edgekd.cli import cli
    from edgekd.console import LINE_MAX

    rows = [{"path": "d/" * 200_000 + "a.png", "label": "a"}]
    rows += [{"path": f"{i}.png", "label": "b"} for i in range(4)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("{source: folder, path: imgs,",
                                                      "{source: manifest, path: m.jsonl,"))
    run = CliRunner().invoke(cli, ["run", str(tmp_path / "p.yaml"), "--out",
                                   str(tmp_path / "run")])
    assert run.exit_code == 2, run.output[:1000]
    (line,) = run.output.strip().splitlines()
    assert len(line) <= LINE_MAX and "m.jsonl" in line and "a.png" in line, line
