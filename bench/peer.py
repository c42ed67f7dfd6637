"""A peer in the same run: what a user would reach for instead of edgekd's int8.

    python -m bench.peer [--tiny] [--datasets digits,mnist] [--olive auto|skip]

The same fp32 ONNX student (edgekd pipeline, seed 0) quantized with the defaults a user
reaches for: onnxruntime `quantize_dynamic` and `quantize_static` (calibrated on the same
train samples as bench.quantization), and Olive's OnnxDynamicQuantization /
OnnxStaticQuantization passes at their defaults. Olive runs in its own virtual environment
(bench/.olive-venv, created with `pip install olive-ai onnxruntime` when missing; or set
EDGEKD_OLIVE_PYTHON to an existing one), never in edgekd's; if it does not install or run,
the reason is recorded. Compared with edgekd's int8 (QAT) ONNX and TFLite: accuracy, top-1
agreement with fp32, size, and batch-1 latency measured interleaved in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, Report, available, build_main, latency_rounds, parse_args
from bench.quantization import CALIBRATION, _Reader, calibration_samples

SETTINGS = {"full": {"runs": 2000, "warmup": 200, "rounds": 3},
            "tiny": {"runs": 20, "warmup": 2, "rounds": 1}}
OLIVE_VENV = ROOT / "bench" / ".olive-venv"
OLIVE_SCRIPT = Path(__file__).with_name("olive_quantize.py")
# olive-ai 0.13.0 imports requests at start-up (its telemetry) without declaring it.
EXTRA = ("requests",)


def ort_defaults(fp32: Path, out_dir: Path, calib: np.ndarray) -> dict[str, Path]:
    """quantize_dynamic and quantize_static with nothing but the required arguments."""
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    out_dir.mkdir(parents=True, exist_ok=True)
    dynamic, static = out_dir / "ort_dynamic.onnx", out_dir / "ort_static.onnx"
    quantize_dynamic(str(fp32), str(dynamic))
    quantize_static(str(fp32), str(static), _Reader(calib, "input"))
    return {"onnxruntime quantize_dynamic (defaults)": dynamic,
            "onnxruntime quantize_static (defaults)": static}


def olive_python(install: bool) -> tuple[Path | None, dict]:
    """Olive's interpreter, installing Olive into its own venv if allowed; why not if not."""
    given = os.environ.get("EDGEKD_OLIVE_PYTHON")
    if given:
        return Path(given), {"source": "EDGEKD_OLIVE_PYTHON", "python": given}
    python = OLIVE_VENV / "bin" / "python"
    if python.is_file() and _has_olive(python):
        return python, {"source": "existing venv", "python": str(python)}
    if not install:
        return None, {"status": "skipped", "why": "no Olive venv and installing was not asked "
                      "for (--tiny or --olive skip)"}
    start = time.perf_counter()
    steps = [[sys.executable, "-m", "venv", "--clear", str(OLIVE_VENV)],
             [str(python), "-m", "pip", "install", "-q", "olive-ai", "onnxruntime", *EXTRA]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=3000)
        if proc.returncode != 0:
            return None, {"status": "install failed", "command": " ".join(step),
                          "why": proc.stderr.strip()[-1500:],
                          "install_s": time.perf_counter() - start}
    return python, {"source": "installed now", "python": str(python), "extra": list(EXTRA),
                    "install_s": time.perf_counter() - start, "venv_mb": _size_mb(OLIVE_VENV)}


def _has_olive(python: Path) -> bool:
    proc = subprocess.run([str(python), "-c", "import olive"], capture_output=True, timeout=120)
    return proc.returncode == 0


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def olive_quantize(python: Path, fp32: Path, calib: np.ndarray, out_dir: Path) -> dict:
    """Run bench/olive_quantize.py with Olive's interpreter; its JSON line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "calibration.npz"
    np.savez(data, x=calib)
    start = time.perf_counter()
    proc = subprocess.run([str(python), str(OLIVE_SCRIPT), str(fp32), str(data), str(out_dir)],
                          capture_output=True, text=True, timeout=1800, cwd=out_dir)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "why": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    return {**json.loads(lines[-1]), "run_s": time.perf_counter() - start}


def evaluate(built, files: dict[str, Path]) -> dict[str, dict]:
    from edgekd.export import runtimes
    from edgekd.metrics import accuracy, top1_agreement

    x, y = built.splits.x_test, built.splits.y_test
    fp32 = runtimes.logits(built.artifact("student_fp32_onnx"), x)
    out = {}
    for name, path in files.items():
        logits = runtimes.logits(path, x)
        out[name] = {"path": str(path), "accuracy": accuracy(logits, y),
                     "top1_agreement_fp32": top1_agreement(logits, fp32),
                     "bytes": path.stat().st_size}
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv, extra=[("--olive", {
        "choices": ("auto", "skip"), "default": "auto",
        "help": "auto: use Olive, installing it into bench/.olive-venv if missing (not with "
                "--tiny, which only uses an existing one); skip: leave Olive out"})])
    report = Report("peer", args)
    setting = "tiny" if args.tiny else "full"
    timing = SETTINGS[setting]
    python, olive_info = (None, {"status": "skipped", "why": "--olive skip"}) \
        if args.olive == "skip" else olive_python(install=not args.tiny)
    report.doc["olive"] = olive_info
    results = {}
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        built = build_main(dataset, data, args.work, args.tiny)
        calib = calibration_samples(built.splits, CALIBRATION[setting])
        out_dir = args.work / setting / dataset / "peer"
        fp32 = built.artifact("student_fp32_onnx")
        files = {"fp32 ONNX (edgekd export)": fp32,
                 "edgekd int8 QAT ONNX": built.artifact("student_int8_onnx"),
                 "edgekd int8 QAT TFLite": built.artifact("student_int8_tflite")}
        files.update(ort_defaults(fp32, out_dir, calib))
        if python is not None:
            olive = olive_quantize(python, fp32, calib, out_dir / "olive")
            results.setdefault("olive_runs", {})[dataset] = olive
            for kind, path in olive.get("models", {}).items():
                files[f"Olive Onnx{kind.title()}Quantization (defaults)"] = Path(path)
            for kind, why in olive.get("errors", {}).items():
                report.note(f"{dataset}: Olive {kind} quantization failed: {why}")
            if not olive.get("ok"):
                report.note(f"{dataset}: Olive produced no model: {olive.get('why')}")
        rows = evaluate(built, files)
        for threads in (1, 2):
            timed = latency_rounds(files, threads, timing["runs"], timing["warmup"],
                                   timing["rounds"])
            for name, figures in timed.items():
                rows[name][f"threads_{threads}"] = figures
        results[dataset] = rows
        base = rows["fp32 ONNX (edgekd export)"]
        report.add_table(
            f"edgekd int8 vs the defaults a user reaches for, {dataset} (same fp32 ONNX; batch 1 "
            f"p50 ms, median of {timing['rounds']} rounds; speed-up over fp32 ONNX)",
            ["model", "accuracy %", "top-1 agreement w/ fp32 %", "KB", "p50 1 thr", "speed-up",
             "p50 2 thr", "speed-up"],
            [[name, r["accuracy"] * 100, r["top1_agreement_fp32"] * 100, r["bytes"] / 1024,
              r["threads_1"]["p50_ms"],
              f"{base['threads_1']['p50_ms'] / r['threads_1']['p50_ms']:.2f}x",
              r["threads_2"]["p50_ms"],
              f"{base['threads_2']['p50_ms'] / r['threads_2']['p50_ms']:.2f}x"]
             for name, r in rows.items()])
    if olive_info.get("status"):
        report.note(f"Olive: {olive_info['status']}: {olive_info['why'][-300:]}")
    report.doc["results"] = results
    report.write()
    return report.doc


if __name__ == "__main__":
    main(sys.argv[1:])
