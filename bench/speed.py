"""Speed: batch-1 latency of every artifact the pipeline ships, int8 vs fp32, vs PyTorch eager.

    python -m bench.speed [--tiny] [--datasets digits,mnist]

For each dataset's exported student (edgekd pipeline, seed 0): ONNX fp32 / int8 (QAT) on
onnxruntime, TFLite fp32 / int8 (QAT) on LiteRT, .pte fp32 / int8 (QAT) on ExecuTorch (XNNPACK
delegate), and the PyTorch eager fp32 student and teacher a user starts from. Each is
measured in a fresh process (edgekd's device runner on the `local` profile; bench/eager.py for
PyTorch) with 1 and 2 threads, `--rounds` times interleaved; p50 / p90 are medians over the
rounds. Any int8 file slower than its fp32 sibling on the same
runtime and thread count is flagged, and ExecuTorch is set against onnxruntime and LiteRT on
the same student, precision and thread count.
"""

from __future__ import annotations

import sys

from bench.common import Report, available, build_main, latency_rounds, parse_args

SETTINGS = {"full": {"runs": 2000, "warmup": 200, "rounds": 3},
            "tiny": {"runs": 20, "warmup": 2, "rounds": 1}}
THREADS = (1, 2)
FILES = {  # name -> (artifact, runtime, precision)
    "onnx_fp32": ("student_fp32_onnx", "onnxruntime", "fp32"),
    "onnx_int8": ("student_int8_onnx", "onnxruntime", "int8"),
    "tflite_fp32": ("student_fp32_tflite", "litert", "fp32"),
    "tflite_int8": ("student_int8_tflite", "litert", "int8"),
    "pte_fp32": ("student_fp32_pte", "executorch", "fp32"),
    "pte_int8": ("student_int8_pte", "executorch", "int8"),
    "torch_fp32": ("student_fp32", "torch eager", "fp32"),
    "teacher_torch_fp32": ("teacher", "torch eager", "fp32"),
}
PAIRS = (("onnxruntime", "onnx_fp32", "onnx_int8"), ("litert", "tflite_fp32", "tflite_int8"),
         ("executorch", "pte_fp32", "pte_int8"))


def measure(built, setting: dict) -> dict:
    """Latency of every file at each thread count, plus MACs for the roofline benchmark."""
    files = {name: built.artifact(artifact) for name, (artifact, _, _) in FILES.items()}
    distill = built.metrics("distill")
    out = {"files": {}, "macs": {"student": distill["student_macs"],
                                 "teacher": distill["teacher_macs"]}}
    for name, (_, runtime, precision) in FILES.items():
        out["files"][name] = {"path": str(files[name]), "runtime": runtime,
                              "precision": precision, "bytes": files[name].stat().st_size,
                              "model": "teacher" if name.startswith("teacher") else "student"}
    for threads in THREADS:
        timed = latency_rounds(files, threads, setting["runs"], setting["warmup"],
                               setting["rounds"])
        for name, figures in timed.items():
            out["files"][name][f"threads_{threads}"] = figures
    return out


def comparisons(res: dict) -> list[dict]:
    """int8 speed-up over fp32 on the same runtime and threads, and over PyTorch eager."""
    rows = []
    files = res["files"]
    for runtime, fp32, int8 in PAIRS:
        for threads in THREADS:
            key = f"threads_{threads}"
            a, b = files[fp32][key]["p50_ms"], files[int8][key]["p50_ms"]
            eager = files["torch_fp32"][key]["p50_ms"]
            rows.append({"runtime": runtime, "threads": threads, "fp32_p50_ms": a,
                         "int8_p50_ms": b, "int8_speedup": a / b,
                         "int8_vs_eager": eager / b, "fp32_vs_eager": eager / a,
                         "int8_slower": b > a})
    return rows


def executorch_rows(res: dict) -> list[dict]:
    """ExecuTorch's p50 against onnxruntime's and LiteRT's on the same student, per precision
    and thread count (ratio = other runtime's ms / ExecuTorch's ms: above 1, ExecuTorch is
    faster)."""
    files, rows = res["files"], []
    for precision in ("fp32", "int8"):
        for threads in THREADS:
            key = f"threads_{threads}"
            ms = {name: files[f"{name}_{precision}"][key]["p50_ms"]
                  for name in ("onnx", "tflite", "pte")}
            rows.append({"precision": precision, "threads": threads, "onnx_p50_ms": ms["onnx"],
                         "tflite_p50_ms": ms["tflite"], "pte_p50_ms": ms["pte"],
                         "pte_vs_onnx": ms["onnx"] / ms["pte"],
                         "pte_vs_tflite": ms["tflite"] / ms["pte"]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    report = Report("speed", args)
    setting = SETTINGS["tiny" if args.tiny else "full"]
    report.doc["setting_detail"] = {**setting, "threads": list(THREADS), "batch": 1}
    results = {}
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        built = build_main(dataset, data, args.work, args.tiny)
        res = measure(built, setting)
        res["comparisons"] = comparisons(res)
        res["executorch"] = executorch_rows(res)
        results[dataset] = res
        for row in res["comparisons"]:
            if row["int8_slower"]:
                report.note(f"{dataset}: int8 is SLOWER than fp32 on {row['runtime']} with "
                            f"{row['threads']} thread(s): {row['int8_speedup']:.2f}x")
        shape = "x".join(str(d) for d in built.splits.input_shape)
        report.add_table(
            f"Latency, {dataset} (batch 1, input {shape}, ms; median of {setting['rounds']} "
            f"fresh-process rounds of {setting['runs']} runs)",
            ["file", "runtime", "precision", "KB", "p50 1 thr", "p90 1 thr", "p50 2 thr",
             "p90 2 thr"],
            [[name, f["runtime"], f["precision"], f["bytes"] / 1024,
              f["threads_1"]["p50_ms"], f["threads_1"]["p90_ms"], f["threads_2"]["p50_ms"],
              f["threads_2"]["p90_ms"]] for name, f in res["files"].items()])
        report.add_table(
            f"int8 vs fp32, {dataset} (p50; speed-up = fp32 ms / int8 ms, same runtime)",
            ["runtime", "threads", "fp32 ms", "int8 ms", "int8 speed-up", "int8 vs eager fp32",
             "flag"],
            [[r["runtime"], r["threads"], r["fp32_p50_ms"], r["int8_p50_ms"],
              f"{r['int8_speedup']:.2f}x", f"{r['int8_vs_eager']:.1f}x",
              "int8 SLOWER" if r["int8_slower"] else ""] for r in res["comparisons"]])
        report.add_table(
            f"ExecuTorch vs onnxruntime and LiteRT, {dataset} (p50 ms, same student; x = "
            "other runtime's ms / ExecuTorch's ms)",
            ["precision", "threads", "onnxruntime", "LiteRT", "ExecuTorch", "x vs onnxruntime",
             "x vs LiteRT"],
            [[r["precision"], r["threads"], r["onnx_p50_ms"], r["tflite_p50_ms"],
              r["pte_p50_ms"], f"{r['pte_vs_onnx']:.2f}x", f"{r['pte_vs_tflite']:.2f}x"]
             for r in res["executorch"]])
    report.doc["results"] = results
    report.write()
    return report.doc


if __name__ == "__main__":
    main(sys.argv[1:])
