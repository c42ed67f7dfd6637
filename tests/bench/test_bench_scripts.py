"""Each benchmark runs in its --tiny setting (digits only) and writes well-formed JSON.

No timing is asserted: only that the scripts run, that every figure they report is there and
of the right kind, and that the README is generated from them. The scripts share one work
directory, so the tiny student is distilled, quantized and exported once (edgekd's cache).
"""

from __future__ import annotations

import json
import math
import os

import pytest

from bench import (
    common,
    distill_quality,
    estimator,
    gemm,
    peer,
    pipeline_cost,
    quantization,
    readme,
    run_all,
    speed,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work"), tmp_path_factory.mktemp("bench-results")


def run(module, dirs, *extra: str) -> dict:
    work, results = dirs
    module.main(["--tiny", "--datasets", "digits", "--work", str(work), "--results",
                 str(results), *extra])
    doc = json.loads((results / f"{module.__name__.split('.')[-1]}.json").read_text())
    assert doc["setting"] == "quick"
    assert doc["environment"]["cpu"] and doc["environment"]["packages"]["torch"]
    assert doc["tables"] and all(t["markdown"].startswith("| ") for t in doc["tables"])
    return doc


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_distill_quality(dirs):
    doc = run(distill_quality, dirs)
    students = doc["results"]["digits"]["students"]
    assert len(students) >= 2
    sizes = [s["summary"]["student_params"] for s in students.values()]
    teacher = next(iter(students.values()))["summary"]["teacher_params"]
    assert all(p < teacher for p in sizes)
    for entry in students.values():
        assert len(entry["per_seed"]) == len(distill_quality.TINY_SEEDS)
        for key in ("accuracy", "baseline_accuracy", "teacher_accuracy", "ece"):
            assert 0 <= entry["summary"][key]["mean"] <= 1
            assert entry["summary"][key]["std"] >= 0


def test_quantization(dirs):
    doc = run(quantization, dirs)
    rows = doc["results"]["digits"]["rows"]
    kinds = {(r["variant"], r["runtime"]) for r in rows}
    assert ("int8 QAT (edgekd)", "onnxruntime") in kinds
    assert ("int8 QAT (edgekd)", "litert") in kinds
    assert {r["method"] for r in rows} >= set(quantization.ORT_METHODS)
    assert ("int8 PTQ litert-torch PT2E", "litert") in kinds
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["top1_agreement_fp32"] <= 1
        assert r["bytes"] > 0
    fp32 = [r for r in rows if r["variant"] == "fp32"]
    assert all(r["top1_agreement_fp32"] > 0.99 for r in fp32)  # exports match their source


def test_speed(dirs):
    doc = run(speed, dirs)
    res = doc["results"]["digits"]
    assert set(res["files"]) == set(speed.FILES)
    for f in res["files"].values():
        for threads in speed.THREADS:
            assert positive(f[f"threads_{threads}"]["p50_ms"])
            assert f[f"threads_{threads}"]["p90_ms"] >= f[f"threads_{threads}"]["p50_ms"] * 0.5
    assert len(res["comparisons"]) == len(speed.PAIRS) * len(speed.THREADS)
    assert len(res["executorch"]) == 2 * len(speed.THREADS)
    assert all(positive(r["pte_vs_onnx"]) and positive(r["pte_vs_tflite"])
               for r in res["executorch"])
    assert all(isinstance(c["int8_slower"], bool) for c in res["comparisons"])
    assert positive(res["macs"]["student"]) and res["macs"]["teacher"] > res["macs"]["student"]


def test_gemm_reads_speed(dirs):
    doc = run(gemm, dirs)
    peak = doc["results"]["peak"]
    assert positive(peak["fp32_threads_1"]["gmacs"]) and positive(peak["int8_threads_1"]["gmacs"])
    achieved = doc["results"]["achieved"]  # from speed.json, written by the test before
    assert achieved and all(positive(r["gmacs"]) for r in achieved)


def test_pipeline_cost(dirs):
    doc = run(pipeline_cost, dirs)
    mobile = doc["results"]["mobile"]
    assert all(s["status"] == "done" for s in mobile["cold"]["stages"].values())
    assert all(s["status"] == "cached" for s in mobile["warm"]["stages"].values())
    epochs = doc["results"]["epochs"]["digits"]
    # Differences of noisy timings: finite, not necessarily positive on a busy machine.
    assert set(epochs["seconds_per_epoch"]) == {*pipeline_cost.MODES, "plain"}
    assert all(math.isfinite(v) for v in epochs["seconds_per_epoch"].values())
    assert all(positive(v) for v in epochs["stage_seconds"].values())


def test_peer(dirs):
    doc = run(peer, dirs, "--olive", "skip")
    rows = doc["results"]["digits"]
    assert "onnxruntime quantize_dynamic (defaults)" in rows
    assert "onnxruntime quantize_static (defaults)" in rows
    for r in rows.values():
        assert 0 <= r["accuracy"] <= 1 and positive(r["threads_1"]["p50_ms"])
    assert doc["olive"]["status"] == "skipped" and doc["olive"]["why"]


def test_estimator(dirs):
    doc = run(estimator, dirs)
    res = doc["results"]
    assert {"rpi4", "rpi5", "all"} <= set(res["summary"])
    assert all(positive(r["published_ms"]) and positive(r["fitted_ms"]) for r in res["rows"])
    held = res["summary"]["all"]["held_out"]
    assert held["n"] == sum(r["held_out_ms"] is not None for r in res["rows"])
    [goal] = estimator.goals(doc)
    assert goal[2] in ("met", "MISSED") and "issue 16" in goal[0]
    assert "Held-out error per network" in estimator.section(doc)


def test_readme_and_run_all(dirs, tmp_path):
    work, results = dirs
    text = readme.render(results)
    assert "## Goals" in text and "--quick" in text
    goals = {row[0] for row in readme.goals(readme.load(results))}
    assert any("3x faster" in g for g in goals) and any("warm rerun" in g for g in goals)
    assert any("issue 16" in g for g in goals) and "## 9. Estimates for unreachable" in text
    # run_all itself, on the quickest benchmark, writes its record and the README
    out = tmp_path / "README.md"
    code = run_all.main(["--tiny", "--only", "gemm", "--datasets", "digits", "--work", str(work),
                         "--results", str(results), "--readme", str(out)])
    assert code == 0
    assert json.loads((results / "run_all.json").read_text())["benchmarks"]["gemm"][
        "exit_code"] == 0
    assert "## 4. Where the limit is" in out.read_text()


def test_mnist_skipped_with_a_message_when_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "MNIST_DIR", tmp_path / "absent")
    assert common.available(["digits", "mnist"], tmp_path, tiny=True).keys() == {"digits"}
    assert "skipping MNIST" in capsys.readouterr().out


def test_the_full_setting_stops_at_once_without_mnist(tmp_path, monkeypatch, capsys):
    """A fresh clone away from shared/ ran the hour of benchmarks without the KD task and
    exited 0; the full setting now stops before anything runs, naming EDGEKD_MNIST."""
    monkeypatch.setattr(run_all, "MNIST_DIR", tmp_path / "absent")
    assert run_all.main(["--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")]) == 2
    assert "EDGEKD_MNIST" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_seeds_side_by_side_give_what_one_process_gives():
    """map_seeds forks `jobs` processes; the function may close over anything (not pickled)."""
    import numpy as np

    table = np.arange(10.0)

    def one(seed):
        return {"seed": seed, "value": float(table[seed] * 2), "pid": os.getpid()}

    side = common.map_seeds(one, [0, 1, 2], jobs=2)
    alone = common.map_seeds(one, [0, 1, 2], jobs=1)
    assert [(r["seed"], r["value"]) for r in side] == [(r["seed"], r["value"]) for r in alone]
    assert {r["pid"] for r in alone} == {os.getpid()} and os.getpid() not in {
        r["pid"] for r in side}


def test_the_full_run_is_held_to_about_an_hour():
    every = {"kd_task": {"exit_code": 0, "wall_s": 1000.0}, "gemm": {"exit_code": 0,
                                                                      "wall_s": 20.0}}
    doc = {"setting": "full", "benchmarks": every, "wall_s": 3000.0,
           "environment": {"cpu_count": 2}}
    [row] = readme._hour_goal(doc)
    assert row[1].startswith("50.0 min (3000 s, 2 benchmarks; longest kd_task 1000 s")
    assert row[2] == "met"
    assert readme._hour_goal({**doc, "wall_s": 4200.0})[0][2] == "MISSED"
    assert readme._hour_goal({**doc, "setting": "quick"}) == []  # a smoke run is no measure
    warm = {"results": {"models": {"resnet18": {"build_s": 1200.0, "reused_files": True},
                                   "cnn_8": {"build_s": 60.0, "reused_files": False}}}}
    [row] = readme._hour_goal(doc, warm)  # cached conversions: judged cold as well
    assert row[2] == "met warm, MISSED cold" and "cold, with their build time (20 min), 70 min" \
        in row[1]
