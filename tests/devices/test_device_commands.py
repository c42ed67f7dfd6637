"""`edgekd profile` and `edgekd devices`, through click's runner on the command objects."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from devhelpers import BIN, free_port

from edgekd.devices.commands import devices_group, profile_command
from edgekd.devices.profiles import devices_dir


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def test_profile_prints_a_table_and_writes_json(models, tmp_path):
    out = tmp_path / "out" / "result.json"
    result = invoke(profile_command, models["onnx_int8"], "--device", "local", "--set",
                    f"work_dir={tmp_path / 'work'}", "--runs", 20, "--threads", 1,
                    "--data", models["data"], "--json", out)
    assert result.exit_code == 0, result.output
    assert "latency_ms_p90" in result.output and "measured" in result.output
    doc = json.loads(out.read_text())
    assert doc["source"] == "measured" and doc["measured"] is True
    assert doc["device"] == "local" and doc["runtime"] == "onnxruntime"
    assert {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "load_ms", "peak_memory_mb",
            "accuracy"} <= set(doc["metrics"])
    assert doc["conditions"]["threads"] == 1 and doc["attempts"] == 1
    assert isinstance(doc["suspect"], list)


@pytest.mark.parametrize("args, message", [
    (["missing.onnx", "--device", "local"], "missing.onnx: not found"),
    (["{onnx}", "--device", "lcoal"], "did you mean local?"),
    (["{onnx}", "--device", "local", "--set", "threads"], "--set threads: expected key=value"),
    (["{onnx}", "--device", "local", "--set", "thread=2"], "did you mean threads?"),
    (["{onnx}", "--device", "local", "--data", "{onnx}"], "not an .npz archive of arrays x and y"),
    (["model.pt", "--device", "local"], "expected a .tflite, .onnx or .pte file"),
])
def test_bad_input_is_one_clear_line_and_exit_2(models, args, message):
    args = [a.format(onnx=models["onnx_fp32"]) for a in args]
    result = invoke(profile_command, *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_unreachable_device_exit_4_or_estimate(models, tmp_path):
    profile_yaml = tmp_path / "gone.yaml"
    profile_yaml.write_text(yaml.safe_dump({
        "transport": "ssh", "host": "127.0.0.1", "port": free_port(), "retries": 1,
        "retry_delay_s": 0, "connect_timeout_s": 2, "peak_int8_gops": 48,
        "peak_fp32_gflops": 24, "memory_bandwidth_gbs": 4}))
    result = invoke(profile_command, models["onnx_int8"], "--device", profile_yaml)
    assert result.exit_code == 4
    assert "device gone unavailable (unreachable) after 2 attempts" in result.output
    out = tmp_path / "est.json"
    result = invoke(profile_command, models["onnx_int8"], "--device", profile_yaml,
                    "--on-unreachable", "estimate", "--json", out)
    assert result.exit_code == 0 and "ESTIMATED" in result.output
    doc = json.loads(out.read_text())
    assert doc["source"] == "estimated" and doc["measured"] is False
    assert doc["metrics"]["latency_ms_p90"] > 0


def test_model_failure_exit_5(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # A well-formed ONNX file whose op no runtime has: the runtime rejects it on the device.
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="edgekd.test")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                      helper.make_opsetid("edgekd.test", 1)]),
              bad)
    result = invoke(profile_command, bad, "--device", "local", "--set",
                    f"work_dir={tmp_path / 'w'}")
    assert result.exit_code == 5 and "failed on device local" in result.output


def test_a_file_that_is_not_a_model_is_bad_input_not_a_device_failure(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    result = invoke(profile_command, bad, "--device", "local")
    assert result.exit_code == 2 and "bad.onnx: not an ONNX model" in result.output


def test_devices_lists_transport_and_reachability(sshd, tmp_path, monkeypatch):
    folder = tmp_path / "devices"
    folder.mkdir()
    shutil.copy(devices_dir() / "local.yaml", folder)
    shutil.copy(sshd.profile(tmp_path), folder / "pi.yaml")
    (folder / "gone.yaml").write_text(yaml.safe_dump({
        "transport": "ssh", "host": "127.0.0.1", "port": free_port(), "connect_timeout_s": 2}))
    (folder / "broken.yaml").write_text("transport: carrier-pigeon\n")
    monkeypatch.setenv("EDGEKD_DEVICES", str(folder))
    result = invoke(devices_group)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert rows["local"].split()[1:] == ["local", "local", "yes"]
    assert "ssh" in rows["pi"] and rows["pi"].endswith("yes")
    assert rows["gone"].endswith("no: unreachable")
    assert "invalid profile" in rows["broken"] and "transport" in rows["broken"]
    assert "not checked" in invoke(devices_group, "--no-check").output


def test_devices_check_says_what_works(sshd, tmp_path):
    result = invoke(devices_group, "check", sshd.profile(tmp_path))
    assert result.exit_code == 0, result.output
    for expected in ("ok    connect", "ok    work dir", "ok    python", "ok    numpy",
                     "onnxruntime", "ai_edge_litert"):
        assert expected in result.output
    jetson = sshd.profile(tmp_path, name="jetson", runtime="trtexec",
                          trtexec=str(BIN / "trtexec"))
    result = invoke(devices_group, "check", jetson)
    assert "ok    trtexec" in result.output and "ok    tegrastats" in result.output


def test_devices_check_reports_missing_python_and_refused_key(sshd, tmp_path):
    result = invoke(devices_group, "check", sshd.profile(tmp_path), "--set",
                    "python=/no/python3")
    assert result.exit_code == 4 and "FAIL  python" in result.output
    assert "/no/python3" in result.output
    result = invoke(devices_group, "check", sshd.profile(tmp_path), "--set",
                    f"identity_file={sshd.other_key}")
    assert result.exit_code == 4 and "FAIL  connect" in result.output
    assert "authentication refused" in result.output


def test_devices_check_android_without_python(adb_device, tmp_path):
    device = adb_device()
    profile_yaml = tmp_path / "phone.yaml"
    profile_yaml.write_text(yaml.safe_dump({
        "transport": "adb", "serial": device.serial, "python": "none",
        "runtime": "benchmark_model", "work_dir": str(tmp_path / "dev")}))
    result = invoke(devices_group, "check", profile_yaml)
    assert result.exit_code == 4 and "FAIL  benchmark_model" in result.output
    result = invoke(devices_group, "check", profile_yaml, "--benchmark-binary",
                    BIN / "benchmark_model")
    assert result.exit_code == 0 and "ok    benchmark_model" in result.output


def test_commands_import_nothing_heavy():
    code = ("import sys, edgekd.devices.commands; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'numpy', 'ai_edge_litert', 'onnx') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--threads", "99999999999999999999", "--threads 99999999999999999999: expected a whole "
                                          "number from 1 to 1,024"),
    ("--threads", "100000", "1 to 1,024"),
    ("--runs", "100000000000", "--runs 100000000000: expected a whole number from 1 to "
                               "1,000,000"),
    ("--warmup", "-1", "0 to 1,000,000"),
])
def test_counts_are_bounded_in_one_line(models, flag, value, message):
    result = invoke(profile_command, models["onnx_fp32"], "--device", "local", flag, value)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_json_replaces_only_an_earlier_result_and_is_checked_before_measuring(models,
                                                                               tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\n")
    for target, message in [(pipeline, "not an earlier `edgekd profile --json` result"),
                            (Path("/proc/x.json"), "/proc: cannot write the --json result")]:
        result = invoke(profile_command, models["onnx_fp32"], "--device", "local",
                        "--json", target)
        assert result.exit_code == 2 and message in result.output, result.output
    assert pipeline.read_text() == "name: p\n"
    out = tmp_path / "result.json"
    for _ in range(2):  # the second run replaces the first's result
        result = invoke(profile_command, models["onnx_fp32"], "--device", "local", "--set",
                        f"work_dir={tmp_path / 'work'}", "--runs", 2, "--warmup", 0,
                        "--json", out)
        assert result.exit_code == 0, result.output
