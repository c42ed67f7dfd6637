"""report.html as a person sees it (issue 16): the verdict, the headline figures and every
warning at the top; the data; cached stages with what they cost when they ran; every accuracy
limit on the accuracy plot; the shipped file's confusion matrix; and, in a real headless
browser, a page that renders with the verdict banner on top."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.report_html import accuracy_limits, headline, shipped, write_html

PASS_GREEN, FAIL_RED, BAR_GREEN = (0x1A, 0x7F, 0x37), (0xC6, 0x28, 0x28), (0x44, 0xAA, 0x77)


def _check(stage, name, value, limit, passed, on="host", unit=""):
    return {"name": name, "value": value, "limit": limit, "passed": passed, "measured_on": on,
            "estimated": False, "unit": unit, "written": "", "stage": stage}


def _stage(kind, metrics, status="done", checks=(), info=None, warnings=(), artifacts=(),
           compute_s=1.0, history=None):
    return {"kind": kind, "status": status, "key": "0" * 16, "error": None,
            "duration_s": 0.01 if status == "cached" else compute_s, "compute_s": compute_s,
            "metrics": metrics, "summary": {}, "checks": [c for c in checks if c],
            "measured_on": "local" if kind == "profile" else "host", "estimated": False,
            "artifacts": list(artifacts), "warnings": list(warnings), "info": info or {},
            "history": history or {}}


def _artifact(name, size):
    return {"name": name, "path": f"export/{name}", "format": name.split("_", 1)[1],
            "sha256": "0" * 64, "bytes": size}


def report(verdict: str = "pass") -> dict:
    """A small report.json of a digits run: a cached teacher, a KD student, int8 files
    profiled on `local`; with verdict "fail" the int8 TFLite file misses the profile's
    accuracy floor (0.995) while the distill floor (0.9) passes."""
    failing = verdict == "fail"
    splits = {"test_split": "held out by edgekd: 25% of the built-in digits (stratified, "
              "seed 0)", "splits": {"train": 1078, "val": 269, "test": 450, "classes": 3}}
    confusion = {"student_int8_tflite": [[148, 2, 0], [1, 149, 0], [0, 1, 149]],
                 "student_int8_onnx": [[150, 0, 0], [0, 150, 0], [0, 0, 150]]}
    files = [_artifact("student_fp32_tflite", 383868), _artifact("student_int8_tflite", 107368),
             _artifact("student_int8_onnx", 108961)]
    curve = [{"epoch": e, "val_accuracy": 0.5 + 0.1 * e, "kept": e == 4} for e in range(5)]
    checks = {
        "distill": [_check("distill", "min_accuracy", 0.9933, 0.9, True),
                    _check("distill", "min_teacher_retention", 1.0045, 0.97, True)],
        "quantize": [_check("quantize", "max_accuracy_drop", 0.0022, 0.01, True)],
        "profile": [_check("profile", "student_int8_tflite.min_accuracy", 0.9911,
                           0.995 if failing else 0.95, not failing, "local"),
                    _check("profile", "student_int8_tflite.max_peak_memory_mb", 47.04,
                           953.67, True, "local", "MiB")]}
    stages = [
        _stage("teacher", {"accuracy": 0.9889}, "cached", info=splits, compute_s=110.28,
               history={"teacher": curve}),
        _stage("distill", {"accuracy": 0.9933, "teacher_accuracy": 0.9889,
                           "teacher_params": 1555914, "student_params": 94186,
                           "param_ratio": 16.52}, checks=checks["distill"], info=splits,
               compute_s=139.2, history={"student": curve}),
        _stage("quantize", {"accuracy": 0.9911, "fp32_accuracy": 0.9933}, info=splits,
               checks=checks["quantize"]),
        _stage("export", {"student_int8_tflite.accuracy": 0.9911,
                          "student_int8_onnx.accuracy": 0.9911}, artifacts=files,
               info={"classes": ["zero", "one", "two"], "confusion": confusion}),
        _stage("profile", {"student_fp32_tflite.latency_ms_p50": 0.131,
                           "student_int8_tflite.latency_ms_p50": 0.0687,
                           "student_int8_tflite.latency_ms_p90": 0.0859,
                           "student_int8_tflite.peak_memory_mb": 47.04,
                           "student_int8_tflite.model_memory_mb": 16.66,
                           "student_int8_tflite.accuracy": 0.9911,
                           "student_int8_tflite.int8_speedup": 1.908},
               checks=checks["profile"], warnings=[
                   "student_int8_tflite: result suspect: latency coefficient of variation "
                   "34% is above 25%"])]
    return {"edgekd_version": "0.2.0", "pipeline": "mobile", "source": "pipelines/mobile.yaml",
            "run_dir": "/tmp/x", "target": "local", "verdict": verdict,
            "exit_code": 3 if failing else 0,
            "message": "gate failed at profile: student_int8_tflite.min_accuracy = 0.9911 "
                       "(limit >= 0.995)" if failing else "",
            "started": "2026-11-30T15:36:51", "duration_s": 374.3,
            "data": {"source": "digits", "path": None, "train": None, "val": None,
                     "test": None, "image_size": [24, 24], "channels": None},
            "stages": stages, "checks": [c for s in stages for c in s["checks"]],
            "artifacts": files, "environment": {"edgekd": "0.2.0"}}


def render(doc: dict, tmp_path: Path) -> str:
    path = tmp_path / "report.html"
    write_html(doc, path)
    return path.read_text()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """report.html of the passing run."""
    return render(report(), tmp_path_factory.mktemp("page"))


def test_verdict_headline_and_warnings_come_before_the_first_stage(tmp_path):
    page = render(report("fail"), tmp_path)
    first_stage = page.index("<section class='stage'")
    order = [page.index(s) for s in ("id='verdict'", "id='headline'",
                                     "WARNING profile: student_int8_tflite: result suspect",
                                     "<h2>Data</h2>", "<h2>Budgets</h2>")]
    assert order == sorted(order) and order[-1] < first_stage
    banner = page[:page.index("id='headline'")]
    assert "FAIL: edgekd mobile" in banner and "class='verdict fail'" in banner
    assert "student_int8_tflite.min_accuracy = 0.9911 (limit &gt;= 0.995)" in banner
    top = page[:first_stage]
    for figure in ("teacher 0.9889", "student fp32 0.9933", "student_int8_tflite on local "
                   "0.9911", "16.5x fewer", "student_int8_tflite 107.4 kB (fp32 383.9 kB)",
                   "1.91x student_int8_tflite", "p50 0.0687 ms, p90 0.0859 ms",
                   "peak 47.0 MiB, model 16.7 MiB"):
        assert figure in top, figure
    no_gate = {**report("fail"), "message": "budgets failed (--no-gate: all stages ran)"}
    banner = render(no_gate, tmp_path).split("id='headline'")[0]
    assert "FAIL student_int8_tflite.min_accuracy: 0.9911 (limit &gt;= 0.995" in banner


def test_headline_speaks_for_the_int8_file_and_leaves_out_what_was_not_recorded():
    doc = report()
    assert shipped(doc) == "student_int8_tflite"
    labels = [label for label, _ in headline(doc)]
    assert labels == ["accuracy (test split)", "parameters", "file size",
                      "int8 speed-up on local", "latency on local", "memory on local"]
    del doc["stages"][4]  # no profile stage (it failed before, or the run stopped earlier)
    assert [label for label, _ in headline(doc)] == labels[:3]


@pytest.mark.parametrize("student, label", [("kd", "KD student fp32 (shipped) 0.9933"),
                                            ("baseline", "hard-label student fp32 (shipped)")])
def test_headline_says_which_student_shipped(student, label):
    doc = report()
    doc["stages"][1]["info"] = {**doc["stages"][1]["info"], "shipped_student": student}
    assert label in dict(headline(doc))["accuracy (test split)"]


def test_data_and_splits_are_summarised(page):
    data = page[page.index("<h2>Data</h2>"):page.index("<h2>Budgets</h2>")]
    for fact in ("source digits", "images resized to 24x24", "3 classes",
                 "train 1,078, val 269, test 450", "held out by edgekd: 25%"):
        assert fact in data, fact


def test_a_cached_stage_shows_what_it_cost_when_it_ran(page):
    assert "teacher: cached (computed in 110.3 s when it ran" in page
    assert "cached (0.0 s)" not in page
    assert "distill: done (139.2 s)" in page


def test_every_accuracy_limit_that_applies_is_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekd.report_html import _plot_accuracy

    doc = report("fail")
    limits = {name: (round(floor, 4), passed) for name, floor, passed in accuracy_limits(doc)}
    assert limits == {"distill min_accuracy": (0.9, True),
                      "distill min_teacher_retention": (round(0.97 * 0.9889, 4), True),
                      "quantize max_accuracy_drop": (round(0.9933 - 0.01, 4), True),
                      "profile student_int8_tflite.min_accuracy": (0.995, False)}
    fig, ax = plt.subplots()
    assert _plot_accuracy(doc, ax)
    drawn = {round(line.get_xdata()[0], 4): line.get_label() for line in ax.get_lines()}
    plt.close(fig)
    assert set(drawn) == {floor for floor, _ in limits.values()}
    assert drawn[0.995].startswith("FAILED") and "profile min_accuracy" in drawn[0.995]
    assert not drawn[0.9].startswith("FAILED")


def test_each_latency_limit_is_drawn_over_its_own_artifact():
    """The latency plot drew one line, the lowest limit of all, across every artifact; a
    per-artifact budget with a failed limit on one file now shows over that file, in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekd.report_html import _plot_latency

    doc = report()
    doc["checks"] = [_check("profile", "student_fp32_tflite.max_latency_ms_p50", 0.131, 0.1,
                            False, "local", "ms"),
                     _check("profile", "student_int8_tflite.max_latency_ms_p50", 0.0687, 0.5,
                            True, "local", "ms")]
    fig, ax = plt.subplots()
    assert _plot_latency(doc, ax)
    drawn = {}
    for collection in ax.collections:
        for (x0, y), (x1, _) in collection.get_segments():
            drawn[round(y, 4)] = ((x0 + x1) / 2, collection.get_color()[0][:3].round(2).tolist(),
                                  collection.get_label())
    plt.close(fig)
    assert set(drawn) == {0.1, 0.5}
    assert round(drawn[0.1][0]) == 0 and round(drawn[0.5][0]) == 1  # sorted artifact names
    assert drawn[0.1][1] == [round(0xdd / 255, 2), 0.0, 0.0]
    assert drawn[0.1][2] == "FAILED p50 limit 0.1 ms" and drawn[0.5][2] == "p50 limit 0.5 ms"


def test_the_shipped_files_confusion_matrix_is_drawn(page):
    assert "<h2>Confusion matrix of student_int8_tflite on the test split</h2><img " in page
    assert page.count("<img src='data:image/png;base64,") == 4  # and accuracy, latency, curves


def test_the_export_stage_records_each_files_confusion_matrix():
    from edgekd.stages.export import _confusion

    labels = np.array([0, 0, 1, 2, 2, 2], np.uint8)
    logits = np.eye(3, dtype=np.float32)[[0, 1, 1, 2, 2, 0]]
    out = _confusion({"tflite_int8": logits}, labels, ["a", "b", "c"])
    assert out == {"classes": ["a", "b", "c"], "confusion": {
        "student_int8_tflite": [[1, 1, 0], [0, 1, 0], [1, 0, 2]]}}
    assert _confusion({"tflite_int8": np.zeros((1, 101))}, np.zeros(1, int), list(range(101))) \
        == {}


def test_a_report_json_from_before_these_fields_still_renders(tmp_path):
    doc = report("fail")
    del doc["data"], doc["artifacts"]
    for stage in doc["stages"]:
        del stage["compute_s"]
        stage["info"].pop("splits", None)
        stage["info"].pop("confusion", None)
    for check in doc["checks"]:
        del check["unit"], check["written"]
    page = render(doc, tmp_path)
    assert "FAIL: edgekd mobile" in page and "teacher: cached (reused in 0.0 s)" in page
    assert "Confusion matrix" not in page and "held out by edgekd" in page
    assert "<td>0.9911</td><td>&gt;= 0.995</td>" in page and "<td>47.04</td>" in page


# --- in a real browser -----------------------------------------------------------------------

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, out: Path) -> np.ndarray:
    """The page as headless Chromium draws it in a 1280 x 2000 window, as H x W x 3 uint8."""
    from PIL import Image

    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={out.parent / 'chromium-profile'}",
                    f"--screenshot={out}", "--window-size=1280,2000", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB"))


def _rows_with(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6):
    """Per row, how many pixels are `colour` (each channel within `tolerance`)."""
    return (np.abs(image.astype(int) - colour).max(axis=2) <= tolerance).sum(axis=1)


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium: apt-get install chromium "
                    "(tests/system_deps.sh installs it when run as root)")
@pytest.mark.parametrize("verdict", ["pass", "fail"])
def test_the_page_in_a_browser_has_the_verdict_banner_on_top(tmp_path, verdict):
    page = tmp_path / "report.html"
    write_html(report(verdict), page)
    started = time.perf_counter()
    image = screenshot(page, tmp_path / "shot.png")
    print(f"chromium screenshot: {time.perf_counter() - started:.1f} s")
    assert image.shape == (2000, 1280, 3)
    colour, other = (PASS_GREEN, FAIL_RED) if verdict == "pass" else (FAIL_RED, PASS_GREEN)
    banner = _rows_with(image, colour)
    rows = np.flatnonzero(banner > 800)  # the banner spans most of the 1100 px wide body
    assert rows.size >= 40 and rows[0] < 40, "no verdict banner at the top of the page"
    assert _rows_with(image, other).sum() < 100
    below = image[rows[-1] + 1:rows[-1] + 400]  # the headline figures and the warnings
    assert (below.max(axis=2) < 100).sum() > 2000, "nothing written under the banner"
    assert (below.min(axis=2) > 240).mean() > 0.5  # ... on a white page, not an error screen
    assert _rows_with(image, BAR_GREEN).sum() > 2000, "the accuracy plot is not drawn"


def test_report_json_records_the_data_and_a_run_without_results_renders(root, tmp_path):
    from edgekd import report
    from edgekd.pipeline import Run, load

    source = root / "pipelines/mobile.yaml"
    doc = report.build(Run(load(source), source, tmp_path))
    assert doc["data"]["source"] == "digits" and doc["data"]["image_size"] == [24, 24]
    page = render(doc, tmp_path)
    assert "PASS: edgekd mobile" in page and "<li>source digits</li>" in page
    assert "No budgets." in page and "<section" not in page
