"""The ADB transport: the real Debian `adb` client and server against the device emulator in
adb_emulator.py (loopback TCP, RSA auth, shell_v2, sync push / pull)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from devhelpers import BIN

from edgekd.devices.measure import DeviceError, profile
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.transports import Adb


def phone(device, tmp_path, **fields) -> DeviceProfile:
    values = {"name": "emulated-phone", "transport": "adb", "serial": device.serial,
              "work_dir": str(tmp_path / "data local tmp"), "python": "none",
              "runtime": "benchmark_model", "benchmark_binary": BIN / "benchmark_model",
              "threads": 2, "connect_timeout_s": 5, "retry_delay_s": 0.5, "timeout_s": 60,
              **fields}
    return DeviceProfile(**values)


def test_benchmark_model_path(adb_device, models, tmp_path):
    device = adb_device()
    ops = tmp_path / "ops.csv"
    result = profile(models["tflite_int8"], phone(device, tmp_path), runs=40, warmup=2,
                     op_profile=ops)
    m = result.metrics
    assert result.runtime == "benchmark_model" and result.measured
    assert 0 < m["latency_ms_min"] <= m["latency_ms_mean"] <= m["latency_ms_max"]
    assert m["load_ms"] > 0 and m["first_inference_ms"] > 0 and m["peak_memory_mb"] > 0
    assert "latency_ms_p90" not in m  # benchmark_model prints no percentiles: none invented
    assert result.conditions["runs"] == 40
    assert "CONV_2D" in ops.read_text()
    ran = next(c for c in device.commands if "--graph=" in c)
    assert "--num_threads=2" in ran and "--num_runs=40" in ran
    assert list((tmp_path / "data local tmp").iterdir()) == []


def test_benchmark_model_pinned_to_big_cores(adb_device, models, tmp_path):
    device = adb_device()
    result = profile(models["tflite_fp32"], phone(device, tmp_path, cpu_mask="1"), runs=5)
    assert result.measured
    assert any(c.startswith("sh -c") and "taskset 1 " in c for c in device.commands)


@pytest.mark.parametrize("style", ["plain", "sci"])
def test_benchmark_model_output_variants(adb_device, models, tmp_path, style):
    device = adb_device(env={"BENCHMARK_MODEL_STYLE": style})
    result = profile(models["tflite_int8"], phone(device, tmp_path), runs=10)
    assert result.metrics["latency_ms_mean"] == pytest.approx(
        (800 + models["tflite_int8"].stat().st_size / 10) / 1e3, rel=0.01)


def test_benchmark_model_unstable_timings_are_suspect(adb_device, models, tmp_path):
    device = adb_device(env={"BENCHMARK_MODEL_JITTER": "1"})
    result = profile(models["tflite_int8"], phone(device, tmp_path), runs=10)
    assert any("coefficient of variation" in why for why in result.suspect)


@pytest.mark.parametrize("features", ["shell_v2,cmd", "cmd"])
def test_bad_model_fails_without_retry_with_or_without_shell_v2(adb_device, tmp_path,
                                                                 features):
    """Without shell_v2 `adb shell` always exits 0; the status edgekd echoes still tells."""
    device = adb_device(features=features)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00XXXXnot a flatbuffer")
    with pytest.raises(DeviceError) as err:
        profile(bad, phone(device, tmp_path, retries=2), runs=5)
    assert err.value.kind == "model" and err.value.attempts == 1
    assert "should be 'TFL3'" in str(err.value)


def test_python_runner_path(adb_device, models, tmp_path):
    device = adb_device()
    profile_ = phone(device, tmp_path, python=sys.executable, runtime="auto")
    result = profile(models["onnx_int8"], profile_, runs=20, data=models["data"])
    assert result.runtime == "onnxruntime" and result.conditions["transport"] == "adb"
    assert result.metrics["latency_ms_p90"] >= result.metrics["latency_ms_p50"] > 0
    assert result.metrics["accuracy"] >= 0.8


def test_refused_key_leaves_device_unauthorized(adb_device, models, tmp_path):
    device = adb_device(trust=False)
    with pytest.raises(DeviceError) as err:
        profile(models["tflite_int8"], phone(device, tmp_path, retries=1,
                                             retry_delay_s=0), runs=5)
    assert (err.value.kind, err.value.reason, err.value.attempts) == \
        ("infrastructure", "auth", 2)
    assert "unauthorized" in str(err.value)


def test_new_key_accepted_on_the_prompt(adb_device, models, tmp_path):
    device = adb_device(trust=False, accept_new_keys=True)
    assert profile(models["tflite_int8"], phone(device, tmp_path), runs=5).measured


def test_unknown_serial_is_unreachable(adb_server, models, tmp_path):
    device = DeviceProfile(name="gone", transport="adb", serial="NOSUCHDEVICE", python="none",
                           runtime="benchmark_model", benchmark_binary=BIN / "benchmark_model",
                           retries=0, connect_timeout_s=1)
    with pytest.raises(DeviceError) as err:
        profile(models["tflite_int8"], device, runs=5)
    assert (err.value.kind, err.value.reason) == ("infrastructure", "unreachable")


def test_disconnect_mid_run_is_retried(adb_device, models, tmp_path):
    """The device drops off the network while the runner runs; adb reconnects it and the
    retry measures."""
    device = adb_device()
    profile_ = phone(device, tmp_path, python=sys.executable, runtime="auto", retries=2)
    dropped = threading.Event()

    def drop_when_runner_runs():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("runner.py" in c for c in device.commands):
                device.disconnect()
                dropped.set()
                return
            time.sleep(0.02)

    threading.Thread(target=drop_when_runner_runs, daemon=True).start()
    result = profile(models["onnx_fp32"], profile_, runs=300)
    assert dropped.is_set()
    assert result.attempts == 2 and result.measured


def test_push_and_pull_round_trip(adb_device, tmp_path):
    device = adb_device()
    transport = Adb(phone(device, tmp_path))
    transport.connect()
    payload = bytes(range(256)) * 1200  # several sync DATA chunks and WRTE packets
    source = tmp_path / "in.bin"
    source.write_bytes(payload)
    transport.push(source, str(tmp_path / "dev dir" / "x.bin"))
    transport.pull(str(tmp_path / "dev dir" / "x.bin"), tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == payload
    proc = transport.run(["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    state = subprocess.run(["adb", "-s", device.serial, "get-state"], capture_output=True,
                           text=True).stdout.strip()
    assert state == "device"


def test_operands_named_like_options_reach_adb_as_operands(adb_device, tmp_path, monkeypatch):
    """`adb shell --`, `adb push --`, `adb pull --`: a file or command starting with `-` is
    an operand, not an adb option."""
    device = adb_device()
    transport = Adb(phone(device, tmp_path))
    transport.connect()
    monkeypatch.chdir(tmp_path)
    Path("-q.bin").write_bytes(b"model bytes")
    transport.push(Path("-q.bin"), str(tmp_path / "pushed"))
    transport.pull(str(tmp_path / "pushed"), Path("-a"))
    assert Path("-a").read_bytes() == b"model bytes"
    try:  # adb hands it on; the device's `sh -c` then reads it as its own option
        transport.run(["-x"], 10)
    except DeviceError:
        pass
    assert any(c.startswith("-x;") for c in device.commands)
