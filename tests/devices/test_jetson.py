"""The Jetson path over the real sshd: trtexec builds and times the engine while tegrastats
samples RAM and power (stand-ins in tests/devices/bin print the vendors' formats; the sshd
puts them on PATH)."""

from __future__ import annotations

import pytest
from devhelpers import BIN

from edgekd.devices.measure import DeviceError, profile
from edgekd.devices.profiles import load_profile


def jetson(sshd, tmp_path, **fields):
    fields = {"name": "jetson", "runtime": "trtexec", "trtexec": str(BIN / "trtexec"), **fields}
    return load_profile(str(sshd.profile(tmp_path, **fields)))


def test_trtexec_with_tegrastats(sshd, models, tmp_path):
    result = profile(models["onnx_int8"], jetson(sshd, tmp_path), runs=50)
    m, c = result.metrics, result.conditions
    assert result.runtime == "tensorrt" and result.measured
    assert (m["latency_ms_p50"], m["latency_ms_p90"], m["latency_ms_p99"]) == (1.17, 1.18, 1.2)
    assert m["load_ms"] == pytest.approx(32.6, abs=0.1)
    assert m["peak_memory_mb"] > m["baseline_memory_mb"] >= 3645  # system RAM, tegrastats
    assert m["power_mw_max"] >= m["power_mw_mean"] > 0
    assert c["precision"] == "int8+fp16" and c["power_mode"] == "15W"
    assert c["temperature_c_after"] >= c["temperature_c_before"] > 40
    assert any("unstable" in w for w in c["warnings"]) and result.suspect == []
    assert list((tmp_path / "device-work").iterdir()) == []


def test_older_trtexec_prints_only_p99(sshd, models, tmp_path):
    """TensorRT 8.2's trtexec prints only percentile(99%): p90 stays absent, not invented."""
    wrapper = tmp_path / "trtexec-8.2"
    wrapper.write_text(f'#!/bin/sh\nTRTEXEC_STYLE=trt8 exec {BIN / "trtexec"} "$@"\n')
    wrapper.chmod(0o755)
    result = profile(models["onnx_fp32"], jetson(sshd, tmp_path, trtexec=str(wrapper)), runs=20)
    assert result.metrics["latency_ms_p99"] == 1.2 and "latency_ms_p90" not in result.metrics
    assert "load_ms" not in result.metrics
    assert result.conditions["precision"] == "fp16"


def test_unstable_gpu_time_is_suspect(sshd, models, tmp_path):
    wrapper = tmp_path / "trtexec-unstable"
    wrapper.write_text(f'#!/bin/sh\nTRTEXEC_CV=40.5 exec {BIN / "trtexec"} "$@"\n')
    wrapper.chmod(0o755)
    result = profile(models["onnx_fp32"], jetson(sshd, tmp_path, trtexec=str(wrapper)), runs=20)
    assert any("40%" in why or "41%" in why for why in result.suspect)


def test_engine_build_failure_is_a_model_failure(sshd, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DeviceError) as err:
        profile(bad, jetson(sshd, tmp_path, retries=2), runs=5)
    assert err.value.kind == "model" and err.value.attempts == 1
    assert "Failed to parse ONNX model" in str(err.value)


def test_missing_trtexec_is_a_setup_failure(sshd, models, tmp_path):
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], jetson(sshd, tmp_path, trtexec="/opt/none/trtexec"),
                runs=5)
    assert (err.value.kind, err.value.reason, err.value.attempts) == \
        ("infrastructure", "setup", 1)
    assert "/opt/none/trtexec" in str(err.value)


def test_tflite_on_jetson_goes_to_the_python_runner(sshd, models, tmp_path):
    result = profile(models["tflite_fp32"], jetson(sshd, tmp_path), runs=10)
    assert result.runtime == "ai_edge_litert" and "latency_ms_p90" in result.metrics
