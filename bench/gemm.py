"""Where the limit is: this CPU's peak fp32 and int8 multiply-accumulate rate, and how much of
it each shipped model reaches.

    python -m bench.gemm [--tiny]

Peak: square GEMMs (256, 512, 1024) timed with 1 and 2 threads through every engine at hand:
fp32 with torch.mm, numpy and onnxruntime MatMul; int8 with torch._int_mm (int8 x int8 ->
int32) and onnxruntime MatMulInteger (uint8 x int8 -> int32, weights constant like a model's).
The peak of a precision is the best engine and size. Achieved: a model's MACs
(edgekd.models.count_macs) / its batch-1 p50 latency from bench/results/speed.json (run
bench.speed first; `python -m bench.run_all` does), as a fraction of the peak of its precision
at the same thread count.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from bench.common import Report, parse_args

SIZES = {"full": (256, 512, 1024), "tiny": (128, 256)}
MIN_SECONDS = {"full": 0.5, "tiny": 0.05}
THREADS = (1, 2)


def _rate(fn, macs: int, min_s: float) -> float:
    """GMAC/s of `fn` (best of a few timed blocks, each >= min_s / 3)."""
    fn()
    best = float("inf")
    for _ in range(3):
        reps, start = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_s / 3:
                break
        best = min(best, elapsed / reps)
    return macs / best / 1e9


def _ort_session(n: int, threads: int, integer: bool):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def engines(n: int, threads: int) -> dict[str, tuple[str, object]]:
    """name -> (precision, zero-argument callable doing one n x n x n GEMM)."""
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    af, bf = (torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    ai, bi = (torch.from_numpy(rng.integers(-128, 128, (n, n), dtype=np.int8)) for _ in range(2))
    an, bn = af.numpy(), bf.numpy()
    ort_f, ort_i = _ort_session(n, threads, False), _ort_session(n, threads, True)
    a_u8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    found = {
        "torch.mm fp32": ("fp32", lambda: torch.mm(af, bf)),
        "onnxruntime MatMul fp32": ("fp32", lambda: ort_f.run(None, {"a": an})),
        "torch._int_mm int8": ("int8", lambda: torch._int_mm(ai, bi)),
        "onnxruntime MatMulInteger u8s8": ("int8", lambda: ort_i.run(None, {"a": a_u8})),
    }
    if threads == 1:  # numpy's BLAS threads are fixed at import; its default is recorded
        found["numpy matmul fp32 (BLAS default threads)"] = ("fp32", lambda: an @ bn)
    return found


def peaks(setting: str) -> tuple[list[dict], dict]:
    rows = []
    for threads in THREADS:
        for n in SIZES[setting]:
            for name, (precision, fn) in engines(n, threads).items():
                try:
                    rate = _rate(fn, n ** 3, MIN_SECONDS[setting])
                except Exception as exc:  # an engine missing here is reported, not fatal
                    rows.append({"engine": name, "precision": precision, "threads": threads,
                                 "n": n, "gmacs": None, "error": str(exc)[:200]})
                    continue
                rows.append({"engine": name, "precision": precision, "threads": threads,
                             "n": n, "gmacs": rate})
    best = {}
    for row in rows:
        if row["gmacs"] is None or "numpy" in row["engine"]:
            continue
        key = f"{row['precision']}_threads_{row['threads']}"
        if row["gmacs"] > best.get(key, {}).get("gmacs", 0):
            best[key] = {"gmacs": row["gmacs"], "engine": row["engine"], "n": row["n"]}
    return rows, best


def achieved(speed: dict, best: dict) -> list[dict]:
    """Each timed file's MAC rate at batch 1 and its share of the matching peak."""
    rows = []
    for dataset, res in speed.get("results", {}).items():
        for name, f in res["files"].items():
            macs = res["macs"][f["model"]]
            for threads in THREADS:
                ms = f[f"threads_{threads}"]["p50_ms"]
                rate = macs / (ms * 1e-3) / 1e9
                peak = best.get(f"{f['precision']}_threads_{threads}", {}).get("gmacs")
                rows.append({"dataset": dataset, "file": name, "runtime": f["runtime"],
                             "precision": f["precision"], "threads": threads, "macs": macs,
                             "p50_ms": ms, "gmacs": rate,
                             "fraction_of_peak": rate / peak if peak else None})
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    report = Report("gemm", args)
    setting = "tiny" if args.tiny else "full"
    rows, best = peaks(setting)
    report.doc["results"] = {"gemm": rows, "peak": best}
    report.add_table("GEMM throughput (GMAC/s, n x n x n)",
                     ["engine", "threads", *[f"n={n}" for n in SIZES[setting]]],
                     _gemm_rows(rows, setting))
    ratio = {t: best[f"int8_threads_{t}"]["gmacs"] / best[f"fp32_threads_{t}"]["gmacs"]
             for t in THREADS if f"int8_threads_{t}" in best and f"fp32_threads_{t}" in best}
    report.doc["results"]["int8_over_fp32_peak"] = ratio
    report.add_table("Peak multiply-accumulate rate of this CPU (best engine and size)",
                     ["precision", "threads", "GMAC/s", "engine", "n"],
                     [[k.split("_")[0], int(k.rsplit("_", 1)[1]), v["gmacs"], v["engine"], v["n"]]
                      for k, v in sorted(best.items())])
    for precision in ("fp32", "int8"):
        one, two = best.get(f"{precision}_threads_1"), best.get(f"{precision}_threads_2")
        if one and two and two["gmacs"] < one["gmacs"]:
            report.note(f"{precision} peak with 2 threads ({two['gmacs']:.0f} GMAC/s) is below "
                        f"1 thread's ({one['gmacs']:.0f}): the second core was busy with "
                        "another process during the run; the 2-thread figures are not a limit")
    for threads, r in ratio.items():
        report.note(f"int8 peak / fp32 peak with {threads} thread(s): {r:.2f}x (the most an "
                    "int8 GEMM-bound model could gain here)")
    speed_path = args.results / "speed.json"
    if speed_path.is_file():
        speed = json.loads(speed_path.read_text())
        got = achieved(speed, best)
        report.doc["results"]["achieved"] = got
        report.doc["results"]["speed_source"] = {"path": str(speed_path),
                                                 "generated_at": speed.get("generated_at"),
                                                 "setting": speed.get("setting")}
        report.add_table(
            f"Achieved MAC rate at batch 1 (p50 from speed.json, {speed.get('setting')} run "
            f"of {speed.get('generated_at')})",
            ["dataset", "file", "threads", "MACs", "p50 ms", "GMAC/s", "% of peak"],
            [[r["dataset"], r["file"], r["threads"], r["macs"], r["p50_ms"], r["gmacs"],
              None if r["fraction_of_peak"] is None else r["fraction_of_peak"] * 100]
             for r in got])
    else:
        report.note(f"{speed_path} not found: run `python -m bench.speed` first for each "
                    "model's share of the peak")
    report.write()
    return report.doc


def _gemm_rows(rows: list[dict], setting: str) -> list[list]:
    table: dict[tuple, dict] = {}
    for r in rows:
        table.setdefault((r["engine"], r["threads"]), {})[r["n"]] = r["gmacs"]
    return [[engine, threads, *[by_n.get(n) for n in SIZES[setting]]]
            for (engine, threads), by_n in table.items()]


if __name__ == "__main__":
    main(sys.argv[1:])
