"""bench.int8_speed --tiny runs end to end (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_int8_speed_tiny(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.int8_speed", "--tiny", "--results",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| cnn_8 | onnxruntime | 1 |" in proc.stdout
    doc = json.loads((tmp_path / "int8_speed.json").read_text())
    assert len(doc["tables"]) == 4 and doc["setting"] == "tiny"
    result = doc["results"]["models"]["cnn_8"]
    assert result["ops"]["int8-after.tflite"]["ops_float"] == 0
    assert result["ops"]["int8-after.onnx"]["ops_int8"] >= 3
    assert result["ops"]["int8-after.pte"]["delegated_ops"] == 1.0
    for runtime in ("onnx", "tflite", "pte"):
        parity = result["parity_after"][runtime]
        assert parity["top1_agreement"] >= 0.99 and parity["max_diff_steps"] <= 1.0 + 1e-3
        assert parity["within_one_step"] == 1.0
    latency = result["latency_ms"]["1"]
    assert set(latency) == {f"{kind}.{ext}" for ext in ("onnx", "tflite", "pte") for kind in
                            ("fp32", "int8-before", "int8-after", "floor")}
    assert all(v > 0 for v in latency.values())
    assert result["ort_profile_us"]["int8-after"]["dense conv"] > 0
