"""Parsers of the vendor tools' output (the stand-ins in bin/ print their real formats, and
the lines quoted in shared/notes/devices.md), suspect rules and estimates."""

from __future__ import annotations

import os
import subprocess

import pytest
from devhelpers import BIN

from edgekd.devices.benchmark_model import parse_benchmark_model
from edgekd.devices.estimate import estimate, onnx_figures, roofline
from edgekd.devices.profiles import DeviceProfile, load_profile
from edgekd.devices.result import suspect_reasons
from edgekd.devices.trtexec import (
    is_quantized,
    parse_tegrastats,
    parse_trtexec,
    tegrastats_metrics,
)

NOTES_BENCHMARK = (
    "Inference timings in us: Init: 20283, First inference: 339304, Warmup (avg): 302814, "
    "Inference (avg): 266473\n"
    """count=50 first=266601 curr=266931 min=265837 max=268116 avg=266473 std=419
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Overall peak memory footprint (MB) via periodic monitoring: 48.1
""")


def test_an_older_benchmark_model_memory_line_is_read():
    """Older builds print the same growth of max RSS as "Peak memory footprint"; 0 means the
    build could not measure it."""
    older = ("count=30 first=47632 curr=49309 min=44914 max=49309 avg=47440.3 std=1087\n"
             "Inference timings in us: Init: 847, First inference: 57338, Warmup (avg): "
             "47674.1, Inference (avg): 47440.3\n"
             "Peak memory footprint (MB): init=0 overall=12.87\n")
    assert parse_benchmark_model(older)["model_memory_mb"] == pytest.approx(12.87)
    unsupported = older.replace("overall=12.87", "overall=0")
    assert "model_memory_mb" not in parse_benchmark_model(unsupported)


def run_tool(name: str, *args: str, **env: str) -> str:
    proc = subprocess.run([str(BIN / name), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=30)
    return proc.stdout + proc.stderr


def test_benchmark_model_lines_from_the_notes():
    m = parse_benchmark_model(NOTES_BENCHMARK)
    assert m == pytest.approx({"load_ms": 20.283, "first_inference_ms": 339.304,
                               "latency_ms_mean": 266.473, "latency_ms_min": 265.837,
                               "latency_ms_max": 268.116, "latency_ms_std": 0.419,
                               "runs": 50, "model_memory_mb": 46.0859,
                               "peak_memory_mb": 48.1})


@pytest.mark.parametrize("style", ["info", "plain", "sci"])
def test_benchmark_model_variants_agree(models, style):
    text = run_tool("benchmark_model", f"--graph={models['tflite_int8']}", "--num_runs=20",
                    "--report_peak_memory_footprint=true", BENCHMARK_MODEL_STYLE=style)
    assert ("INFO: " in text) == (style != "plain") and ("e+0" in text) == (style == "sci")
    m = parse_benchmark_model(text)
    expected = (800 + models["tflite_int8"].stat().st_size / 10) / 1e3
    assert m["latency_ms_mean"] == pytest.approx(expected, rel=0.01)
    assert m["runs"] == 20  # the timed runs, not the warm-up line before them
    assert m["latency_ms_min"] <= m["latency_ms_mean"] <= m["latency_ms_max"]
    assert m["peak_memory_mb"] == 48.1


def test_benchmark_model_failure_parses_to_nothing(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"12345678garbage")
    assert parse_benchmark_model(run_tool("benchmark_model", f"--graph={bad}")) == {}


def test_trtexec_summary_from_a_real_log_line():
    log = ("[04/08/2025-23:15:48] [I] Engine deserialized in 0.21022 sec.\n"
           "[04/08/2025-23:15:51] [I] === Performance summary ===\n"
           "[04/08/2025-23:15:51] [I] Throughput: 8.66824 qps\n"
           "[04/08/2025-23:15:51] [I] Latency: min = 110.946 ms, max = 115.703 ms, mean = "
           "112.938 ms, median = 112.567 ms, percentile(90%) = 114.427 ms, percentile(95%) = "
           "115.415 ms, percentile(99%) = 115.703 ms\n"
           "[04/08/2025-23:15:51] [I] H2D Latency: min = 0.6 ms, max = 0.9 ms, mean = 0.7 ms, "
           "median = 0.7 ms, percentile(90%) = 0.8 ms\n"
           "[04/08/2025-23:15:51] [W] * GPU compute time is unstable, with coefficient of "
           "variance = 20.46%.\n"
           "&&&& PASSED TensorRT.trtexec [TensorRT v100900] [b34] # trtexec --onnx=m.onnx\n")
    parsed = parse_trtexec(log)
    assert parsed["passed"] and parsed["gpu_cv"] == pytest.approx(0.2046)
    assert parsed["metrics"] == pytest.approx({
        "load_ms": 210.22, "throughput_qps": 8.66824, "latency_ms_min": 110.946,
        "latency_ms_max": 115.703, "latency_ms_mean": 112.938, "latency_ms_p50": 112.567,
        "latency_ms_p90": 114.427, "latency_ms_p95": 115.415, "latency_ms_p99": 115.703})


def test_trtexec_older_build_and_failure(tmp_path, models):
    old = parse_trtexec(run_tool("trtexec", f"--onnx={models['onnx_fp32']}",
                                 "--percentile=90,95,99", TRTEXEC_STYLE="trt8"))
    assert set(old["metrics"]) >= {"latency_ms_p50", "latency_ms_p99"}
    assert "latency_ms_p90" not in old["metrics"] and old["passed"]
    failed = parse_trtexec(run_tool("trtexec", f"--onnx={tmp_path / 'missing.onnx'}"))
    assert not failed["passed"] and "latency_ms_mean" not in failed["metrics"]


@pytest.mark.parametrize("style, ram, power", [("orin", 3645, 2957), ("nano", 1536, 2434)])
def test_tegrastats_formats(style, ram, power):
    proc = subprocess.Popen([str(BIN / "tegrastats"), "--interval", "50"], text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "TEGRASTATS_STYLE": style})
    lines = [proc.stdout.readline() for _ in range(5)]
    proc.terminate()
    proc.wait(10)
    samples = parse_tegrastats("".join(lines))["samples"]
    assert len(samples) == 5 and samples[0]["ram_used_mb"] == ram
    assert samples[0]["power_mw"] == power and 30 < samples[0]["temperature_c"] < 100
    m = tegrastats_metrics(samples)
    assert m["model_memory_mb"] == 300 and m["baseline_memory_mb"] == ram


def test_suspect_rules():
    assert suspect_reasons({"latency_ms_mean": 1.0, "latency_ms_std": 0.05}, {}, 0.25, 80) == []
    [cv] = suspect_reasons({"latency_ms_mean": 1.0, "latency_ms_std": 0.5}, {}, 0.25, 80)
    assert "50%" in cv
    changed = suspect_reasons({}, {"throttled_before": "0x0", "throttled_after": "0x50005"},
                              0.25, 80)
    assert any("changed" in r for r in changed) and any("throttled" in r for r in changed)
    # bits 16-19 only say it happened since boot: not now
    assert suspect_reasons({}, {"throttled_before": "0x50000", "throttled_after": "0x50000"},
                           0.25, 80) == []
    assert suspect_reasons({}, {"temperature_c_after": 85.2}, 0.25, 80)


def test_onnx_figures_and_estimates(models):
    fp32, int8 = onnx_figures(models["onnx_fp32"]), onnx_figures(models["onnx_int8"])
    # conv 1->8 and 8->8 (3x3, 8x8 output) and linear 8->4
    assert fp32["macs"] == 8 * 64 * 9 + 8 * 64 * 72 + 32
    assert fp32["params"] == (72 + 8) + (576 + 8) + (32 + 4) == int8["params"]
    assert is_quantized(models["onnx_int8"].read_bytes())
    assert not is_quantized(models["onnx_fp32"].read_bytes())
    pi = load_profile("rpi4")
    a = estimate(models["onnx_fp32"], pi)
    b = estimate(models["onnx_int8"], pi)
    assert not a.measured and a.runtime == "estimate" and b.conditions["precision"] == "int8"
    assert b.metrics["model_memory_mb"] < a.metrics["model_memory_mb"]
    jetson = load_profile("jetson-orin-nano")
    assert estimate(models["onnx_fp32"], jetson).metrics["latency_ms_p50"] < \
        a.metrics["latency_ms_p50"]


def test_roofline_is_compute_or_memory_bound():
    device = DeviceProfile(name="d", peak_int8_gops=100, peak_fp32_gflops=50,
                           memory_bandwidth_gbs=10, estimate_efficiency=1.0)
    compute = roofline({"macs": 5e9, "params": 1000, "activation_bytes": 0}, "fp32", 50, device)
    assert compute["latency_ms_p90"] == pytest.approx(200.0)  # 1e10 ops / 5e10 ops/s
    memory = roofline({"macs": 1, "params": 2.5e8, "activation_bytes": 0}, "fp32", 50, device)
    assert memory["latency_ms_p90"] == pytest.approx(100.0)  # 1e9 bytes / 1e10 B/s


def test_estimate_needs_spec_figures(models):
    device = DeviceProfile(name="bare")
    from edgekd.devices.errors import DeviceError

    with pytest.raises(DeviceError, match="lacks peak_fp32_gflops"):
        estimate(models["onnx_fp32"], device)
    with pytest.raises(DeviceError, match="estimate_inputs"):
        estimate(models["tflite_fp32"], load_profile("rpi4"))
    given = estimate(models["tflite_int8"], load_profile("rpi4"),
                     {"macs": 1e6, "params": 1e4, "activation_bytes": 1e4, "precision": "int8"})
    assert given.metrics["latency_ms_p99"] > 0



def test_a_suspect_variation_is_shown_with_the_digits_that_tell_it_from_the_limit():
    [close] = suspect_reasons({"latency_ms_mean": 1.0, "latency_ms_std": 0.2503}, {}, 0.25, 80)
    assert close == "latency coefficient of variation 25.03% is above 25.00%"
    [far] = suspect_reasons({"latency_ms_mean": 1.0, "latency_ms_std": 0.4}, {}, 0.25, 80)
    assert far == "latency coefficient of variation 40% is above 25%"
