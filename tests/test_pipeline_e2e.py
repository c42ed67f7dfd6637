"""The whole pipeline through the CLI, on a tiny configuration of the built-in digits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = """\
name: tiny
seed: 1
teacher: {arch: cnn, width: 16, depth: 2, train: {epochs: 8, lr: 0.01}}
student: {arch: cnn, width: 8, depth: 2}
target: local
stages:
  - kind: distill
    epochs: 15
    budget: {min_accuracy: 0.70}
  - kind: quantize
    epochs: 1
    budget: {max_accuracy_drop: 0.05}
  - kind: export
    formats: [onnx_fp32, onnx_int8, tflite_fp32, tflite_int8]
    budget: {min_top1_agreement: 0.95, max_size: 2 MB}
  - kind: profile
    runs: 20
    warmup: 2
    budget: {max_latency_ms: {p90: 1 s}, max_peak_memory: 2 GB}
"""


def edgekd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "tiny.yaml").write_text(TINY)
    proc = edgekd("run", "tiny.yaml", cwd=work)
    return work, proc


@pytest.mark.slow
def test_run_passes_and_writes_report_and_artifacts(first_run):
    work, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "runs/tiny/report.json").read_text())
    assert report["verdict"] == "pass"
    assert [s["kind"] for s in report["stages"]] == ["teacher", "distill", "quantize", "export",
                                                      "profile"]
    assert all(s["status"] == "done" for s in report["stages"])
    names = {a["name"] for a in report["artifacts"]}
    assert {"student_fp32_onnx", "student_int8_onnx", "student_int8_tflite",
            "student_fp32_tflite"} <= names
    for artifact in report["artifacts"]:
        assert Path(artifact["path"]).is_file() and artifact["bytes"] > 0
        assert len(artifact["sha256"]) == 64
    metrics = {s["kind"]: s["metrics"] for s in report["stages"]}
    assert metrics["distill"]["teacher_params"] > metrics["distill"]["student_params"]
    assert "baseline_accuracy" in metrics["distill"]
    assert metrics["export"]["student_int8_tflite.top1_agreement"] >= 0.95
    assert metrics["export"]["student_fp32_onnx.max_abs_diff"] < 1e-3
    export = metrics["export"]
    for name in ("student_int8_onnx", "student_int8_tflite"):
        assert export[f"{name}.within_one_step"] >= 0.99
        assert export[f"{name}.ops_float"] == 0 and export[f"{name}.ops_int8"] >= 4
    assert export["student_int8_tflite.max_diff_steps_vs_onnx"] <= 1.0 + 1e-3
    for key in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "load_ms",
                "peak_memory_mb", "accuracy"):
        assert metrics["profile"][f"student_int8_tflite.{key}"] > 0
    assert "student_int8_onnx.int8_speedup" in metrics["profile"]
    assert report["checks"] and all(c["passed"] for c in report["checks"])
    assert report["environment"]["packages"]["torch"]
    assert "<img src='data:image/png;base64," in (work / "runs/tiny/report.html").read_text()


@pytest.mark.slow
def test_rerun_is_cached(first_run):
    work, _ = first_run
    stage_files = sorted((work / "runs/tiny").glob("*/stage.json"))
    before = {p: p.stat().st_mtime_ns for p in stage_files}
    proc = edgekd("run", "tiny.yaml", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((work / "runs/tiny/report.json").read_text())
    assert {s["status"] for s in report["stages"]} == {"cached"}
    # Nothing retrained or rewritten: every stage record is untouched.
    assert len(before) == 5 and {p: p.stat().st_mtime_ns for p in stage_files} == before
    assert "running" not in proc.stderr


@pytest.mark.slow
def test_impossible_budget_exits_3_names_check_and_keeps_artifacts(first_run):
    work, _ = first_run
    text = TINY.replace("budget: {max_accuracy_drop: 0.05}",
                        "budget: {max_accuracy_drop: 0.05, min_accuracy: 0.9999}")
    (work / "strict.yaml").write_text(text)
    # Same name, so the same run directory: stages are reused, only the gate differs.
    proc = edgekd("run", "strict.yaml", cwd=work)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "gate failed at quantize: min_accuracy" in proc.stderr
    report = json.loads((work / "runs/tiny/report.json").read_text())
    assert report["verdict"] == "fail"
    failed = [c for c in report["checks"] if not c["passed"]]
    assert [(c["stage"], c["name"], c["limit"]) for c in failed] == [
        ("quantize", "min_accuracy", 0.9999)]
    assert failed[0]["value"] < 0.9999
    statuses = {s["kind"]: s["status"] for s in report["stages"]}
    assert statuses["quantize"] == "gate_failed" and statuses["export"] == "not_run"
    assert (work / "runs/tiny/export/student_int8_tflite".replace("student_int8_tflite",
                                                                  "student_int8.tflite")).is_file()


@pytest.mark.slow
def test_no_gate_runs_on_and_still_exits_3(first_run):
    work, _ = first_run
    (work / "strict2.yaml").write_text(TINY.replace("{min_accuracy: 0.70}",
                                                    "{min_accuracy: 0.9999}"))
    proc = edgekd("run", "strict2.yaml", "--no-gate", cwd=work)
    assert proc.returncode == 3
    report = json.loads((work / "runs/tiny/report.json").read_text())
    assert all(s["status"] == "cached" for s in report["stages"])


@pytest.mark.slow
def test_misspelled_key_exit_2_one_line(first_run):
    work, _ = first_run
    (work / "typo.yaml").write_text(TINY.replace("max_accuracy_drop", "max_acuracy_drop"))
    proc = edgekd("run", "typo.yaml", cwd=work)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "typo.yaml: stages[1].budget.max_acuracy_drop: unknown key (did you mean "
        "max_accuracy_drop?)"]


@pytest.mark.slow
def test_force_reruns_from_stage(first_run):
    work, _ = first_run
    proc = edgekd("run", "tiny.yaml", "--force", "profile", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((work / "runs/tiny/report.json").read_text())
    statuses = {s["kind"]: s["status"] for s in report["stages"]}
    assert statuses == {"teacher": "cached", "distill": "cached", "quantize": "cached",
                        "export": "cached", "profile": "done"}


@pytest.mark.slow
def test_report_command_rerenders(first_run):
    work, _ = first_run
    html = work / "runs/tiny/report.html"
    html.unlink()
    proc = edgekd("report", "runs/tiny", cwd=work)
    assert proc.returncode == 0 and html.is_file()
