"""`edgekd run` with an SSH target: gates on what the device measured, and on an estimate
(marked as such) when the device cannot be reached and the pipeline allows it."""

import json
import subprocess
import sys

import pytest
from devhelpers import free_port

PIPELINE = """\
name: remote
teacher: {{arch: cnn, width: 8, depth: 2, train: {{epochs: 3}}}}
student: {{arch: cnn, width: 4, depth: 2}}
target: {target}
on_unreachable: {on_unreachable}
stages:
  - kind: distill
    epochs: 3
    baseline: false
  - kind: export
    formats: [onnx_fp32, tflite_fp32]
  - kind: profile
    runs: 20
    warmup: 2
    budget: {{max_latency_ms: {{p50: 1 s}}, max_peak_memory: 4 GB}}
"""


def run(work, target, on_unreachable):
    (work / "p.yaml").write_text(PIPELINE.format(target=target, on_unreachable=on_unreachable))
    proc = subprocess.run([sys.executable, "-m", "edgekd", "run", "p.yaml"], cwd=work,
                          capture_output=True, text=True, timeout=600)
    report = json.loads((work / "runs/remote/report.json").read_text())
    return proc, report


@pytest.mark.slow
def test_pipeline_gates_on_device_measurement_then_on_estimate(sshd, tmp_path):
    specs = {"peak_fp32_gflops": 50, "peak_int8_gops": 100, "memory_bandwidth_gbs": 10,
             "retries": 1}
    reachable = sshd.profile(tmp_path, **specs)
    proc, report = run(tmp_path, reachable, "fail")
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = report["stages"][-1]
    assert profile["measured_on"] == "loopback-ssh" and profile["estimated"] is False
    checks = [c for c in report["checks"] if c["stage"] == "profile"]
    assert checks and all(not c["estimated"] and c["measured_on"] == "loopback-ssh"
                          for c in checks)
    assert profile["metrics"]["student_fp32_onnx.latency_ms_p90"] > 0

    # The same device, now at a port nobody listens on.
    gone = sshd.profile(tmp_path, port=free_port(), name="gone-ssh", **specs)
    proc, report = run(tmp_path, gone, "fail")
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert f"device {gone}: infrastructure failure" in proc.stderr
    assert "on_unreachable: estimate would estimate instead" in proc.stderr

    proc, report = run(tmp_path, gone, "estimate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = report["stages"][-1]
    assert profile["status"] == "done" and profile["estimated"] is True
    checks = [c for c in report["checks"] if c["stage"] == "profile"]
    assert checks and all(c["estimated"] for c in checks)
    assert all(a["measured"] is False for a in profile["info"]["artifacts"].values())
    html = (tmp_path / "runs/remote/report.html").read_text()
    assert "estimated on gone-ssh" in html
