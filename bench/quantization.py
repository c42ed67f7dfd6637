"""Quantization: the fp32 student vs edgekd's int8 QAT vs int8 post-training quantization.

    python -m bench.quantization [--tiny] [--datasets digits,mnist]

From the same distilled fp32 student (edgekd pipeline, seed 0), on the same test split:
- int8 QAT: edgekd's quantize + export stages (ONNX QDQ and TFLite int8);
- int8 PTQ with onnxruntime static QDQ (per-channel weights, uint8 activations) and each of
  its calibration methods (MinMax, Entropy, Percentile), through edgekd.quant.ptq where it
  exists (Entropy with 2,048 bins; quantize_static alone drops the bin options);
- int8 PTQ with litert-torch's PT2E quantizer (per-channel), converted to TFLite with
  litert-torch and to ONNX with torch.onnx (the same converted model);
each run by its own runtime. Reported: accuracy, its drop against the fp32 student (points),
top-1 agreement with the fp32 student, file size, and int8 accuracy / teacher accuracy.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

from bench.common import Report, available, build_main, parse_args

CALIBRATION = {"full": 512, "tiny": 64}
ORT_METHODS = ("MinMax", "Entropy", "Percentile")


class _Reader:
    """onnxruntime's CalibrationDataReader over an array, 32 samples per batch."""

    def __init__(self, x: np.ndarray, name: str):
        self.batches = iter([{name: x[i:i + 32]} for i in range(0, len(x), 32)])

    def get_next(self):
        return next(self.batches, None)


def calibration_samples(splits, n: int) -> np.ndarray:
    """A seeded sample of the train split (never the test split)."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(splits.train), size=min(n, len(splits.train)), replace=False)
    return splits.train.inputs(np.sort(pick))


def ort_static(fp32: Path, out: Path, calib: np.ndarray, method: str) -> tuple[Path, str]:
    """onnxruntime static QDQ with per-channel int8 weights and uint8 activations (its
    recommended x86 setting) and the given calibration method: through edgekd.quant.ptq where
    it exists (it hands the calibrator its real bin options), otherwise quant_pre_process and
    quantize_static directly. Returns the file and which route made it."""
    try:
        from edgekd.quant.ptq import Calibration, onnx_static
    except ImportError:
        return _ort_static_direct(fp32, out, calib, method), "quantize_static"
    onnx_static(fp32, calib, out, Calibration(method=method.lower()))
    return out, "edgekd.quant.ptq"


def _ort_static_direct(fp32: Path, out: Path, calib: np.ndarray, method: str) -> Path:
    import onnxruntime.quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(f"{fp32.stem}.pre.onnx")
    if not pre.is_file():
        quant_pre_process(str(fp32), str(pre))
    q.quantize_static(str(pre), str(out), _Reader(calib, "input"),
                      quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod[method])
    return out


def pt2e_ptq(student_path: Path, calib: np.ndarray, out_dir: Path) -> dict[str, Path]:
    """litert-torch's PT2E quantizer, observers calibrated on `calib`; TFLite and ONNX."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgekd.console import quiet
    from edgekd.export.writers import write_onnx
    from edgekd.models import load_model

    model = load_model(student_path).eval()
    shape = tuple(calib.shape[1:])
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    x = torch.from_numpy(calib)
    dim = torch.export.Dim("batch", min=1, max=1024)
    with quiet():
        captured = torch.export.export(model, (x[:8],), dynamic_shapes=({0: dim},)).module()
        prepared = prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for batch in x.split(32):
                prepared(batch)
        unfolded = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
        folded = convert_pt2e(prepared, fold_quantize=True)
    tflite = out_dir / "pt2e_ptq_int8.tflite"
    with quiet():
        litert_torch.convert(unfolded, (torch.zeros(1, *shape),),
                             quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(tflite))
    onnx = write_onnx(folded, shape, out_dir / "pt2e_ptq_int8.onnx", opset=18)
    return {"tflite": tflite, "onnx": onnx}


def variants(built, out_dir: Path, calib: np.ndarray, report: Report) -> list[dict]:
    """Every artifact to compare: (variant, method, runtime, path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_onnx = built.artifact("student_fp32_onnx")
    found = [
        {"variant": "fp32", "method": "-", "runtime": "onnxruntime", "path": fp32_onnx},
        {"variant": "fp32", "method": "-", "runtime": "litert",
         "path": built.artifact("student_fp32_tflite")},
        {"variant": "int8 QAT (edgekd)", "method": "PT2E QAT", "runtime": "onnxruntime",
         "path": built.artifact("student_int8_onnx")},
        {"variant": "int8 QAT (edgekd)", "method": "PT2E QAT", "runtime": "litert",
         "path": built.artifact("student_int8_tflite")},
    ]
    for method in ORT_METHODS:
        try:
            path, route = ort_static(fp32_onnx, out_dir / f"ort_static_{method.lower()}.onnx",
                                     calib, method)
        except Exception as exc:  # one failing method must not hide the others
            report.note(f"{built.dataset}: onnxruntime static {method} failed: {exc}")
            continue
        found.append({"variant": f"int8 PTQ onnxruntime static QDQ ({route})",
                      "method": method, "runtime": "onnxruntime", "path": path})
    try:
        files = pt2e_ptq(built.artifact("student_fp32"), calib, out_dir)
        for runtime, key in (("litert", "tflite"), ("onnxruntime", "onnx")):
            found.append({"variant": "int8 PTQ litert-torch PT2E", "method": "MinMax observers",
                          "runtime": runtime, "path": files[key]})
    except Exception as exc:
        report.note(f"{built.dataset}: litert-torch PT2E PTQ failed: {type(exc).__name__}: "
                    f"{exc}")
    return found


def evaluate(built, found: list[dict]) -> list[dict]:
    """Accuracy, drop and top-1 agreement against the fp32 student, on the test split."""
    from edgekd.artifacts import sha256_file
    from edgekd.export import runtimes
    from edgekd.kd.train import predict
    from edgekd.metrics import accuracy, top1_agreement
    from edgekd.models import load_model

    splits = built.splits
    fp32 = predict(load_model(built.artifact("student_fp32")), splits.x_test)
    teacher = predict(load_model(built.artifact("teacher")), splits.x_test)
    fp32_acc, teacher_acc = accuracy(fp32, splits.y_test), accuracy(teacher, splits.y_test)
    rows = []
    for item in found:
        logits = runtimes.logits(item["path"], splits.x_test)
        acc = accuracy(logits, splits.y_test)
        rows.append({**item, "path": str(item["path"]), "accuracy": acc,
                     "drop_pt": (fp32_acc - acc) * 100,
                     "top1_agreement_fp32": top1_agreement(logits, fp32),
                     "teacher_retention": acc / teacher_acc, "bytes": item["path"].stat().st_size,
                     "sha256": sha256_file(item["path"])})
    return rows, {"fp32_torch_accuracy": fp32_acc, "teacher_accuracy": teacher_acc,
                  "test_samples": len(splits.y_test),
                  "param_ratio": built.metrics("distill")["param_ratio"],
                  "student_params": built.metrics("distill")["student_params"],
                  "qat_torch_accuracy": built.metrics("quantize")["accuracy"]}


def identical_calibrations(rows: list[dict]) -> list[str]:
    """Calibration methods whose model is byte-identical to MinMax's (worth knowing)."""
    ort = {r["method"]: r["sha256"] for r in rows if r["variant"].startswith("int8 PTQ onnx")}
    return [m for m in ORT_METHODS[1:] if m in ort and ort[m] == ort.get("MinMax")]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    report = Report("quantization", args)
    setting = "tiny" if args.tiny else "full"
    results = {}
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        built = build_main(dataset, data, args.work, args.tiny)
        calib = calibration_samples(built.splits, CALIBRATION[setting])
        found = variants(built, args.work / setting / dataset / "ptq", calib, report)
        rows, ref = evaluate(built, found)
        same = identical_calibrations(rows)
        direct = any("(quantize_static)" in r["variant"] for r in rows)
        if same:
            report.note(f"{dataset}: onnxruntime static {', '.join(same)} calibration gave a "
                        "model byte-identical to MinMax." + (" Expected for Entropy through "
                        "quantize_static alone: its calibrator "
                        "defaults to 128 histogram bins and 128 quantized bins, which leaves one "
                        "candidate threshold (the full range), and quantize_static passes no "
                        "option to change the bin counts (onnxruntime 1.32 calibrate.py)"
                        if direct else ""))
        parity = qat_parity(built.metrics("export"))
        results[dataset] = {"reference": ref, "calibration_samples": len(calib), "rows": rows,
                            "identical_to_minmax": same, "qat_parity": parity}
        report.add_table(
            f"int8 accuracy, {dataset} ({ref['test_samples']} test samples; fp32 student "
            f"{ref['fp32_torch_accuracy'] * 100:.2f} %, teacher "
            f"{ref['teacher_accuracy'] * 100:.2f} %, student 1/{ref['param_ratio']:.0f} of the "
            f"teacher's parameters; PTQ calibrated on {len(calib)} train samples)",
            ["variant", "calibration", "runtime", "accuracy %", "drop vs fp32 (pt)",
             "top-1 agreement w/ fp32 %", "acc / teacher's %", "KB"],
            [[r["variant"], r["method"], r["runtime"], r["accuracy"] * 100, r["drop_pt"],
              r["top1_agreement_fp32"] * 100, r["teacher_retention"] * 100, r["bytes"] / 1024]
             for r in rows])
        report.add_table(
            f"int8 QAT files vs the converted QAT PyTorch model, {dataset} test split",
            ["file", "max diff (output steps)", "outputs within 1 step %", "top-1 agreement %",
             "max diff vs the other int8 runtime (steps)"],
            [[name, p["max_diff_steps"], p["within_one_step"] * 100, p["top1_agreement"] * 100,
              p.get("vs_onnx_steps")] for name, p in parity.items()])
    report.doc["results"] = results
    report.write()
    return report.doc


def qat_parity(export: dict) -> dict[str, dict]:
    """The export stage's parity figures for the int8 QAT files (against the QAT model)."""
    parity = {}
    for name in ("student_int8_onnx", "student_int8_tflite"):
        if f"{name}.max_abs_diff_steps" in export:
            parity[name] = {"max_diff_steps": export[f"{name}.max_abs_diff_steps"],
                            "within_one_step": export[f"{name}.within_one_step"],
                            "top1_agreement": export[f"{name}.top1_agreement"]}
    if "student_int8_tflite" in parity:
        parity["student_int8_tflite"]["vs_onnx_steps"] = export.get(
            "student_int8_tflite.max_diff_steps_vs_onnx")
    return parity


if __name__ == "__main__":
    main(sys.argv[1:])
