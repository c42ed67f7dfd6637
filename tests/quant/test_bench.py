"""bench/int8_speed.py --tiny runs end to end (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_int8_speed_tiny(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "int8_speed.py"), "--tiny",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| cnn_8 | onnxruntime | 1 |" in proc.stdout
    result = json.loads(out.read_text())["models"]["cnn_8"]
    assert result["ops"]["int8-after.tflite"]["ops_float"] == 0
    assert result["ops"]["int8-after.onnx"]["ops_int8"] >= 3
    for runtime in ("onnx", "tflite"):
        parity = result["parity_after"][runtime]
        assert parity["top1_agreement"] >= 0.99 and parity["max_diff_steps"] <= 1.0 + 1e-3
