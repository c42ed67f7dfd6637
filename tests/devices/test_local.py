"""The local transport: real onnxruntime / LiteRT in a fresh process on this machine."""

from __future__ import annotations

import pytest

from edgekd.devices.measure import DeviceError, profile
from edgekd.devices.profiles import load_profile


def local(tmp_path, **overrides):
    return load_profile("local", {"work_dir": str(tmp_path / "work"), "retry_delay_s": "0",
                                  **overrides})


@pytest.mark.parametrize("name, runtime", [("tflite_int8", "ai_edge_litert"),
                                           ("tflite_fp32", "ai_edge_litert"),
                                           ("onnx_fp32", "onnxruntime")])
def test_local_profile(models, tmp_path, name, runtime):
    result = profile(models[name], local(tmp_path), runs=25, warmup=2, threads=1,
                     data=models["data"])
    m = result.metrics
    assert result.runtime == runtime and result.measured and result.attempts == 1
    assert m["latency_ms_min"] <= m["latency_ms_p50"] <= m["latency_ms_p99"] \
        <= m["latency_ms_max"]
    assert m["peak_memory_mb"] >= m["baseline_memory_mb"] > 0
    assert m["accuracy"] >= (0.99 if "fp32" in name else 0.8)
    assert result.conditions["threads"] == 1 and result.conditions["runs"] == 25
    assert list((tmp_path / "work").iterdir()) == []


def test_corrupt_model_is_a_model_failure_not_retried(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DeviceError) as err:
        profile(bad, local(tmp_path, retries="3"), runs=5)
    assert (err.value.kind, err.value.attempts) == ("model", 1)


def test_runtime_not_installed_is_a_setup_failure(models, tmp_path):
    with pytest.raises(DeviceError) as err:
        profile(models["tflite_fp32"], local(tmp_path, runtime="tflite_runtime"), runs=5) \
            if _missing("tflite_runtime") else pytest.skip("tflite_runtime is installed")
    assert (err.value.kind, err.value.reason) == ("infrastructure", "setup")
    assert "tflite_runtime is not installed" in str(err.value)


def test_wrong_runtime_for_the_file_is_a_model_failure(models, tmp_path):
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], local(tmp_path, runtime="ai_edge_litert"), runs=5)
    assert err.value.kind == "model" and "cannot run" in str(err.value)


def test_not_a_model_file(tmp_path):
    with pytest.raises(DeviceError, match="expected a .tflite, .onnx or .pte file"):
        profile(tmp_path / "m.pt", local(tmp_path))


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
