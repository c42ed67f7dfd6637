"""ExecuTorch's executor_runner on devices without Python: its output parser (the lines its
source prints, and the stand-in in bin/ that prints them), and the whole path over the real
adb client against the device emulator, per-op profile included."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest
from devhelpers import BIN

from edgekd.devices.executor_runner import errors_in, parse_executor_runner
from edgekd.devices.measure import DeviceError, profile
from edgekd.devices.profiles import DeviceProfile

# executor_runner.cpp's ET_LOG lines in the posix PAL's format, as an XNNPACK build prints them.
CURRENT = """\
I 00:00:00.000412 executorch:executor_runner.cpp:212] Resetting threadpool with num threads = 4
I 00:00:00.001503 executorch:executor_runner.cpp:333] Model file /data/local/tmp/m.pte is loaded.
I 00:00:00.001511 executorch:executor_runner.cpp:342] Using method forward
I 00:00:00.001518 executorch:executor_runner.cpp:392] Setting up CPU planned buffer 0, size 2112.
I 00:00:00.004920 executorch:executor_runner.cpp:456] Model loaded in 3.402000 ms.
I 00:00:00.005701 executorch:executor_runner.cpp:551] Iteration 1 of 5: 0.780000 ms
I 00:00:00.006020 executorch:executor_runner.cpp:551] Iteration 2 of 5: 0.310000 ms
I 00:00:00.006320 executorch:executor_runner.cpp:551] Iteration 3 of 5: 0.300000 ms
I 00:00:00.006630 executorch:executor_runner.cpp:551] Iteration 4 of 5: 0.310000 ms
I 00:00:00.006950 executorch:executor_runner.cpp:551] Iteration 5 of 5: 0.320000 ms
I 00:00:00.006955 executorch:executor_runner.cpp:560] Model executed successfully 5 time(s) \
in 2.020000 ms.
I 00:00:00.006961 executorch:executor_runner.cpp:568] 1 outputs: 
OutputX 0: tensor(sizes=[1, 10], [0.214, -1.02, 0.887, 0.0, 0.331, -0.554, 1.42, -0.109])
"""
OLD = """\
I 00:00:00.001203 executorch:executor_runner.cpp:140] Model file model.pte is loaded.
I 00:00:00.001211 executorch:executor_runner.cpp:149] Using method forward
I 00:00:00.001218 executorch:executor_runner.cpp:196] Setting up planned buffer 0, size 2112.
I 00:00:00.002520 executorch:executor_runner.cpp:219] Method loaded.
I 00:00:00.002601 executorch:executor_runner.cpp:247] Inputs prepared.
I 00:00:00.010602 executorch:executor_runner.cpp:258] Model executed successfully 20 time(s) \
in 8.000000 ms.
I 00:00:00.010611 executorch:executor_runner.cpp:262] 1 outputs: 
"""


def test_current_build_gives_load_first_inference_and_percentiles_of_the_timed_runs():
    m = parse_executor_runner(CURRENT, warmup=1)
    assert m["load_ms"] == pytest.approx(3.402)
    assert m["first_inference_ms"] == pytest.approx(0.78)
    assert m["runs"] == 4  # the warm-up execution is not a timed run
    assert m["latency_ms_mean"] == pytest.approx(0.31)
    assert m["latency_ms_min"] == pytest.approx(0.30) and m["latency_ms_max"] == 0.32
    assert m["latency_ms_p50"] == pytest.approx(0.31)
    assert m["latency_ms_p90"] == pytest.approx(0.317)  # numpy's linear interpolation


def test_old_build_gives_the_mean_only_and_no_invented_percentiles():
    m = parse_executor_runner(OLD, warmup=2)
    assert m == pytest.approx({"latency_ms_mean": 0.4, "runs": 20})


def test_a_failed_run_parses_to_nothing_and_its_error_lines_are_kept():
    text = ("E 00:00:00.000901 executorch:program.cpp:113] Program identifier 'TFL3' != "
            "expected 'ET12'\n"
            "E 00:00:00.000933 executorch:executor_runner.cpp:330] Failed to parse model file "
            "m.pte\n")
    assert parse_executor_runner(text) == {}
    assert errors_in(text)[-1] == "Failed to parse model file m.pte"
    assert errors_in("ERROR: unknown command line flag 'cpu_threads'\n") == [
        "ERROR: unknown command line flag 'cpu_threads'"]


@pytest.fixture(scope="session")
def pte(tmp_path_factory):
    """A tiny fp32 .pte (XNNPACK) and an ETDump ExecuTorch's own runtime recorded for it."""
    pytest.importorskip("executorch.runtime", reason="the executorch extra is not installed")
    import torch

    from edgekd.devices.runner import PteModel
    from edgekd.export.executorch import write_pte

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 10)).eval()
    out = tmp_path_factory.mktemp("pte")
    path = write_pte(model, (1, 8, 8), out / "tiny.pte")
    traced = PteModel(str(path), 1, etdump=True)
    for _ in range(5):
        traced.run(torch.zeros(1, 1, 8, 8))
    traced.program.write_etdump_result_to_file(str(out / "tiny.etdump"), str(out / "debug"))
    return {"model": path, "etdump": out / "tiny.etdump"}


@pytest.mark.parametrize("style", ["current", "old"])
def test_stand_in_prints_what_the_parser_reads(pte, style):
    proc = subprocess.run([str(BIN / "executor_runner"), f"--model_path={pte['model']}",
                           "--num_executions=12", "--cpu_threads=1"], capture_output=True,
                          text=True, env={**os.environ, "EXECUTOR_RUNNER_STYLE": style},
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    m = parse_executor_runner(proc.stderr, warmup=2)
    expected = 0.05 + pte["model"].stat().st_size / 1e6
    assert m["latency_ms_mean"] == pytest.approx(expected, rel=0.05)
    assert ("latency_ms_p90" in m) == (style == "current")
    assert m["runs"] == (10 if style == "current" else 12)


def phone(device, tmp_path, **fields) -> DeviceProfile:
    """A phone without Python that runs .tflite files with benchmark_model and .pte files
    with executor_runner."""
    values = {"name": "emulated-phone", "transport": "adb", "serial": device.serial,
              "work_dir": str(tmp_path / "data local tmp"), "python": "none",
              "runtime": "benchmark_model", "benchmark_binary": BIN / "benchmark_model",
              "executor_runner": BIN / "executor_runner", "threads": 2,
              "connect_timeout_s": 5, "retry_delay_s": 0.5, "timeout_s": 60, **fields}
    return DeviceProfile(**values)


def test_pte_on_a_phone_goes_to_executor_runner(adb_device, pte, tmp_path):
    device = adb_device()
    ops = tmp_path / "ops.csv"
    result = profile(pte["model"], phone(device, tmp_path), runs=30, warmup=3, op_profile=ops)
    m = result.metrics
    assert result.runtime == "executor_runner" and result.measured
    assert 0 < m["latency_ms_min"] <= m["latency_ms_p50"] <= m["latency_ms_p90"] \
        <= m["latency_ms_max"]
    assert m["load_ms"] > 0 and m["first_inference_ms"] > m["latency_ms_p50"]
    assert "peak_memory_mb" not in m  # executor_runner prints no memory: none invented
    assert result.conditions["runs"] == 30
    ran = next(c for c in device.commands if "--model_path=" in c)
    assert "--num_executions=33" in ran and "--cpu_threads=2" in ran
    # A build without event tracing refuses --etdump_path: said so, not guessed.
    assert result.conditions["op_profile"].startswith("unavailable: executor_runner was built "
                                                      "without event tracing")
    assert not ops.exists()
    assert list((tmp_path / "data local tmp").iterdir()) == []


def test_a_traced_build_gives_per_op_timings_from_its_etdump(adb_device, pte, tmp_path):
    device = adb_device(env={"EXECUTOR_RUNNER_ETDUMP": str(pte["etdump"])})
    ops = tmp_path / "ops.csv"
    result = profile(pte["model"], phone(device, tmp_path), runs=5, warmup=1, op_profile=ops)
    assert f"ops from ETDump ({ops}); 20 traced runs" in result.conditions["op_profile"]
    rows = list(csv.DictReader(ops.open()))
    assert rows and {r["runs_on"] for r in rows} == {"XNNPACK"}
    assert any(r["op"].startswith("Convolution") for r in rows)
    # Five traced runs; the first (cold) one is left out of the statistics.
    assert all(int(r["runs"]) == 4 and float(r["mean_ms"]) >= 0 for r in rows)
    # A traced build writes model.etdump into its working directory on every run: the work
    # dir, removed afterwards (adb shell starts in /, where the real tool would abort).
    assert list((tmp_path / "data local tmp").iterdir()) == []


def test_a_phone_without_the_binary_is_a_setup_failure_naming_the_field(adb_device, pte,
                                                                         tmp_path):
    device = adb_device()
    with pytest.raises(DeviceError) as raised:
        profile(pte["model"], phone(device, tmp_path, executor_runner=None, retries=0))
    assert raised.value.kind == "infrastructure"
    assert "set executor_runner in the profile" in str(raised.value)


def test_a_file_the_runtime_refuses_is_a_model_failure(adb_device, tmp_path):
    device = adb_device()
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"12345678garbage")
    with pytest.raises(DeviceError) as raised:
        profile(bad, phone(device, tmp_path))
    assert raised.value.kind == "model" and raised.value.attempts == 1
    assert "Failed to parse model file" in str(raised.value)


def test_devices_check_names_the_executor_runner_binary(adb_device, tmp_path):
    from edgekd.devices.check import check_device

    device = adb_device()
    found = {f.name: f for f in check_device(phone(device, tmp_path))}
    assert found["executor_runner"].status == "ok"
    missing = {f.name: f for f in check_device(phone(device, tmp_path, executor_runner=None,
                                                     runtime="executor_runner"))}
    assert missing["executor_runner"].status == "FAIL"
    assert "set executor_runner" in missing["executor_runner"].detail
