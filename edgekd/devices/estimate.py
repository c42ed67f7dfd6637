"""Latency and memory estimates for a device that cannot be reached.

Latency comes from one of two methods, by what is known about the device's board:

- calibrated (the profile names a `calibration_board` with published measurements in
  edgekd/profiles/published/latency.yaml): a sum of costs per kind of work,

      ms = a * dense GMACs + b * depthwise GMACs + c * activation MB + d * layers / 100

  with (a, b, c, d) >= 0 fitted to the board's published rows (least squares on relative
  error), one set per precision class (float, int8) and published thread count; between two
  thread counts the latency is interpolated geometrically. Dense convolutions and matrix
  products are compute-bound, depthwise convolutions and activation traffic memory-bound, and
  each layer costs a dispatch and a thread synchronisation. Each estimate carries the error the
  method made on networks left out of its fit (leave-one-model-out cross-validation).
- roofline (any other device): the slower of compute and memory traffic at
  `estimate_efficiency` of the profile's spec figures; on boards that do have published rows it
  is several times too slow, which its expected error says.

An estimate is always marked `measured=False`, runtime "estimate"; it says nothing about load
time, first inference or accuracy, so those metrics are absent.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.published import Published, load_published
from edgekd.devices.result import ProfileResult

MIB = 2**20
QDQ = ("QuantizeLinear", "DequantizeLinear")
ITEMSIZE = {"fp32": 4, "fp16": 2, "int8": 1}
MIN_ROWS = 3
"""Fewest published rows a (precision class, threads) group needs to be fitted."""


def estimate(model: Path, device: DeviceProfile, figures: dict | None = None,
             why: str = "", threads: int | None = None) -> ProfileResult:
    """Estimate `model` on `device` with `threads` threads (default the profile's).

    `figures`: {"macs", "params", "activation_bytes", optional "dense_macs",
    "depthwise_macs", "layers", "precision": "int8" | "fp32"}; counted from the file for
    .onnx when None. `conditions["expected_error"]` says how far off the method has been."""
    if figures is None:
        if model.suffix != ".onnx":
            raise DeviceError(f"device {device.name}: cannot estimate {model.name}: give the "
                              "model's MACs, parameters and activation bytes (estimate_inputs)"
                              + (f"; the measurement failed: {why}" if why else ""),
                              "infrastructure", "setup")
        figures = onnx_figures(model)
    precision = figures.get("precision") or ("int8" if _is_int8(model) else "fp32")
    threads = threads or device.threads
    if device.calibration_board:
        latency, conditions = calibrated(figures, precision, threads, device.calibration_board)
    else:
        latency, conditions = _roofline_estimate(figures, precision, device, why)
    metrics = {"latency_ms_mean": latency, "latency_ms_p50": latency,
               "latency_ms_p90": latency, "latency_ms_p99": latency,
               **memory(figures, precision, device)}
    conditions.update({"precision": precision, "threads": threads,
                       **{k: figures[k] for k in ("macs", "dense_macs", "depthwise_macs",
                                                  "params", "activation_bytes", "layers")
                          if k in figures}})
    if why:
        conditions["unreachable"] = why
    return ProfileResult(metrics=metrics, device=device.name, runtime="estimate",
                         measured=False, conditions=conditions)


def calibrated(figures: dict, precision: str, threads: int, board: str) -> tuple[float, dict]:
    """Latency (ms) from the board's published rows, and the conditions that explain it:
    the fitted rates, how threads were handled, and the expected error band."""
    data = load_published()
    group = precision_class(precision)
    coefs = coefficients(board, data)
    if not any(g == group for g, _ in coefs):
        raise DeviceError(f"cannot estimate on {board}: no published {group} measurements "
                          f"for it in the calibration data", "infrastructure", "setup")
    latency, how = predict(feature_vector(figures), coefs, group, threads)
    used = sorted({t for g, t in coefs if g == group})
    conditions = {"method": f"calibrated on published {board} measurements",
                  "board": board, "thread_scaling": how,
                  "rates": {t: rates(coefs[(group, t)]) for t in used},
                  "expected_error": expected_error(board, group, latency)}
    notes = []
    rows = [r for r in data.rows if r.board == board and precision_class(r.precision) == group]
    stored = {r.precision for r in rows}
    if precision not in stored:
        notes.append(f"no published {precision} rows for {board}; calibrated on "
                     f"{', '.join(sorted(stored))} (ncnn computes in fp16 on cores with FP16 "
                     "arithmetic), so an fp32 runtime can be slower, up to 2x on dense layers")
    macs = [data.models[r.model].figures()["macs"] for r in rows]
    if not min(macs) / 2 <= figures["macs"] <= max(macs) * 2:
        notes.append(f"extrapolated: {figures['macs'] / 1e6:.3g} M MACs, the published "
                     f"networks have {min(macs) / 1e6:.3g} to {max(macs) / 1e6:.3g} M, so the "
                     "expected error is theirs, not this model's")
        conditions["expected_error"].pop("latency_ms_range")
    if notes:
        conditions["calibration_note"] = "; ".join(notes)
    return latency, conditions


def precision_class(precision: str) -> str:
    """int8, or float for fp32 and fp16 (a board's float rows stand for both)."""
    return "int8" if precision == "int8" else "float"


def feature_vector(figures: dict, activation_scale: float = 1.0) -> np.ndarray:
    """[dense GMACs, depthwise GMACs, activation MB, layers / 100] of a model; MACs not split
    by kind count as dense. `activation_scale` turns an fp32 export's bytes into another
    precision's."""
    depthwise = figures.get("depthwise_macs", 0)
    dense = figures.get("dense_macs", figures["macs"] - depthwise)
    return np.array([dense / 1e9, depthwise / 1e9,
                     figures["activation_bytes"] * activation_scale / 1e6,
                     figures.get("layers", 0) / 100], dtype=float)


def row_features(row, data: Published) -> np.ndarray:
    """The feature vector of a published row, its bytes in the row's precision."""
    return feature_vector(data.models[row.model].figures(), ITEMSIZE[row.precision] / 4)


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising sum((x @ c / y - 1)^2): relative error, so a 5 ms
    network weighs as much as a 500 ms one. Four features: every subset is solved and the
    best one whose coefficients are all non-negative wins (exact non-negative least squares)."""
    xw, ones = x / y[:, None], np.ones(len(y))
    best, best_res = np.zeros(x.shape[1]), np.inf
    for n in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), n):
            c, *_ = np.linalg.lstsq(xw[:, cols], ones, rcond=None)
            res = float(((xw[:, cols] @ c - 1) ** 2).sum())
            if (c >= 0).all() and res < best_res:
                best, best_res = np.zeros(x.shape[1]), res
                best[list(cols)] = c
    return best


def coefficients(board: str, data: Published,
                 leave_out: str | None = None) -> dict[tuple[str, int], np.ndarray]:
    """Fitted coefficients per (precision class, threads) for `board`, from its usable rows
    (all networks but `leave_out`)."""
    groups: dict[tuple[str, int], list] = {}
    for row in data.rows:
        if row.board == board and row.exclude is None and row.model != leave_out:
            groups.setdefault((precision_class(row.precision), row.threads), []).append(row)
    return {key: fit(np.array([row_features(r, data) for r in rows]),
                     np.array([r.ms for r in rows]))
            for key, rows in groups.items() if len(rows) >= MIN_ROWS}


def predict(x: np.ndarray, coefs: dict[tuple[str, int], np.ndarray], group: str,
            threads: int) -> tuple[float, str]:
    """Latency for `threads` threads and how it was reached: a fitted thread count, geometric
    interpolation between the two nearest, or the nearest one outside the fitted range."""
    fitted = sorted(t for g, t in coefs if g == group)
    if threads in fitted:
        return float(x @ coefs[(group, threads)]), f"fitted at {threads} threads"
    if threads < fitted[0] or threads > fitted[-1]:
        near = fitted[0] if threads < fitted[0] else fitted[-1]
        return float(x @ coefs[(group, near)]), f"{near} threads (none published for {threads})"
    low = max(t for t in fitted if t < threads)
    high = min(t for t in fitted if t > threads)
    share = np.log(threads / low) / np.log(high / low)
    a, b = float(x @ coefs[(group, low)]), float(x @ coefs[(group, high)])
    return float(a ** (1 - share) * b ** share), (f"interpolated between {low} and "
                                                   f"{high} threads")


def rates(coef: np.ndarray) -> dict[str, float | None]:
    """The coefficients as rates a person can check against the chip (None: the fit found
    no cost of that kind)."""
    dense, depthwise, activation, layer = (float(c) for c in coef)
    return {"dense_gmac_per_s": round(1e3 / dense, 2) if dense else None,
            "depthwise_gmac_per_s": round(1e3 / depthwise, 2) if depthwise else None,
            "activation_gb_per_s": round(1 / activation, 2) if activation else None,
            "us_per_layer": round(layer * 10, 1) if layer else None}


@lru_cache(maxsize=4)
def cross_validate(path: Path | None = None) -> tuple[dict, ...]:
    """Every usable published row with its estimate from the full fit (`fitted_ms`) and from a
    fit without any row of its network (`held_out_ms`, None when too few rows remain)."""
    data = load_published(path)
    boards = sorted({r.board for r in data.rows})
    full = {b: coefficients(b, data) for b in boards}
    out = []
    for name in data.models:
        held = {b: coefficients(b, data, leave_out=name) for b in boards}
        for row in (r for r in data.rows if r.model == name and r.exclude is None):
            x, group = row_features(row, data), precision_class(row.precision)
            fitted = predict(x, full[row.board], group, row.threads)[0]
            left = held[row.board] if any(g == group for g, _ in held[row.board]) else None
            out.append({**row.model_dump(include={"board", "model", "input", "threads",
                                                  "precision", "runtime", "source"}),
                        "class": group, "published_ms": row.ms, "fitted_ms": fitted,
                        "held_out_ms": predict(x, left, group, row.threads)[0] if left
                        else None})
    return tuple(out)


def expected_error(board: str, group: str, latency_ms: float | None = None) -> dict:
    """Percentiles of the held-out error (estimate / published - 1) on `board`'s rows of
    `group` (all the board's rows when fewer than 5), and the latency range they imply."""
    rows = [r for r in cross_validate() if r["board"] == board and r["held_out_ms"]]
    if sum(r["class"] == group for r in rows) >= 5:
        rows = [r for r in rows if r["class"] == group]
    errors = np.array([r["held_out_ms"] / r["published_ms"] - 1 for r in rows])
    low, high = np.percentile(errors, [10, 90])
    out = {"basis": f"leave-one-model-out over {len(rows)} published {board} rows "
                    f"({len({r['model'] for r in rows})} networks)",
           "median_abs_pct": round(100 * float(np.median(np.abs(errors))), 1),
           "p90_abs_pct": round(100 * float(np.percentile(np.abs(errors), 90)), 1),
           "p10_p90_pct": [round(100 * float(low), 1), round(100 * float(high), 1)]}
    if latency_ms is not None:  # the true latency if this estimate errs like those rows
        out["latency_ms_range"] = [round(float(latency_ms / (1 + high)), 3),
                                   round(float(latency_ms / (1 + low)), 3)]
    return out


def describe(conditions: dict) -> str:
    """One line for people: how an estimate was made and how far off it can be."""
    err = conditions.get("expected_error") or {}
    line = conditions.get("method", "estimate")
    if "median_abs_pct" not in err:
        return f"{line}; expected error: {err.get('basis', 'unknown')}"
    band = err.get("latency_ms_range")
    return (f"{line}; expected error: median {err['median_abs_pct']:g} %, 90 % of rows "
            f"within {err['p90_abs_pct']:g} %" + (f"; likely {band[0]:.3g}-{band[1]:.3g} ms"
                                                   if band else "")
            + (f"; {conditions['calibration_note']}" if "calibration_note" in conditions
               else ""))


def _roofline_estimate(figures: dict, precision: str, device: DeviceProfile,
                       why: str) -> tuple[float, dict]:
    peak = device.peak_int8_gops if precision == "int8" else device.peak_fp32_gflops
    if peak is None or device.memory_bandwidth_gbs is None:
        field = "peak_int8_gops" if precision == "int8" else "peak_fp32_gflops"
        raise DeviceError(f"device {device.name}: cannot estimate: the profile lacks {field} or "
                          "memory_bandwidth_gbs" + (f"; the measurement failed: {why}"
                                                    if why else ""), "infrastructure", "setup")
    return roofline(figures, precision, peak, device)["latency_ms_p50"], {
        "method": "roofline estimate", "peak_gops": peak,
        "memory_bandwidth_gbs": device.memory_bandwidth_gbs,
        "efficiency": device.estimate_efficiency,
        "expected_error": {"basis": "unknown for this device (no calibration_board); on "
                           "published Raspberry Pi latencies the same roofline came out a median "
                           "3.9x too slow, 1.8x to 7.7x for 80 % of them (bench/estimator.py)"}}


def roofline(figures: dict, precision: str, peak_gops: float,
             device: DeviceProfile) -> dict[str, float]:
    """Latency: max(compute, traffic) at the efficiency share of the peaks; memory as
    `memory` says."""
    weight_bytes = figures["params"] * (1 if precision == "int8" else 4)
    compute_s = 2 * figures["macs"] / (peak_gops * 1e9 * device.estimate_efficiency)
    # Weights are read once; each activation is written once and read once.
    traffic_s = (weight_bytes + 2 * figures["activation_bytes"]) / (
        device.memory_bandwidth_gbs * 1e9 * device.estimate_efficiency)
    latency_ms = max(compute_s, traffic_s) * 1e3
    return {"latency_ms_mean": latency_ms, "latency_ms_p50": latency_ms,
            "latency_ms_p90": latency_ms, "latency_ms_p99": latency_ms,
            **memory(figures, precision, device)}


def memory(figures: dict, precision: str, device: DeviceProfile) -> dict[str, float]:
    """Runtime plus weights plus every activation (an upper bound: real arenas reuse
    buffers)."""
    weight_bytes = figures["params"] * (1 if precision == "int8" else 4)
    model_mb = (weight_bytes + figures["activation_bytes"]) / MIB
    return {"model_memory_mb": model_mb, "peak_memory_mb": device.runtime_memory_mb + model_mb,
            "baseline_memory_mb": device.runtime_memory_mb}


def _is_int8(model: Path) -> bool:
    if model.suffix == ".onnx":
        from edgekd.devices.trtexec import is_quantized

        return is_quantized(model.read_bytes())
    return False


def onnx_figures(path: Path) -> dict:
    """MACs of Conv / Gemm / MatMul (float and quantized forms), split into depthwise and
    dense, how many such layers, parameter count and activation bytes (every intermediate
    tensor in its own dtype, except float tensors an int8 runtime fuses away), batch 1."""
    import onnx
    from onnx import helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    # Scales and zero points of quantize / dequantize nodes are bookkeeping, not parameters.
    bookkeeping = {name for node in graph.node if node.op_type in QDQ for name in node.input[1:]}
    params = sum(_prod(i.dims) for i in graph.initializer
                 if i.name not in bookkeeping and _prod(i.dims) > 1
                 and i.data_type != onnx.TensorProto.INT64)  # int64: shapes and axes
    shapes, sizes = {}, {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in tensor.shape.dim]
        shapes[info.name] = dims
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        sizes[info.name] = _prod(dims) * itemsize
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    macs, layers = {"dense": 0, "depthwise": 0}, 0
    for node in graph.node:
        kind, count = _node_macs(node, shapes)
        macs[kind] += count
        layers += count > 0
    views = _fused_float_tensors(graph)
    inputs = {i.name for i in graph.input}
    activations = sum(size for name, size in sizes.items()
                      if name not in initializers and name not in inputs and name not in views)
    return {"macs": int(macs["dense"] + macs["depthwise"]), "dense_macs": int(macs["dense"]),
            "depthwise_macs": int(macs["depthwise"]), "params": int(params),
            "activation_bytes": int(activations), "layers": layers}


def _fused_float_tensors(graph) -> set[str]:
    """Float tensors an int8 runtime never materialises: DequantizeLinear outputs (a float view
    of an int8 tensor) and outputs read only by QuantizeLinear (fused into the producer)."""
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    outputs = {o.name for o in graph.output}
    fused = {out for node in graph.node if node.op_type == "DequantizeLinear"
             for out in node.output if out not in outputs}
    fused |= {name for name, ops in consumers.items() if ops == {"QuantizeLinear"}}
    return fused


def _node_macs(node, shapes: dict[str, list[int]]) -> tuple[str, int]:
    """("dense" | "depthwise", MACs) of one node; depthwise: a grouped convolution with one
    input channel per group (memory-bound: each weight is used once per output pixel)."""
    out = shapes.get(node.output[0]) if node.output else None
    if not out:
        return "dense", 0
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        if not weight:
            return "dense", 0
        groups = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        kind = "depthwise" if groups > 1 and weight[1] == 1 else "dense"
        # weight: (C_out, C_in / groups, kH, kW): each output element costs C_in/groups*k*k.
        return kind, _prod(out) * _prod(weight[1:])
    if node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shapes.get(node.input[0])
        if not a:
            return "dense", 0
        transposed = node.op_type == "Gemm" and any(
            attr.name == "transA" and attr.i for attr in node.attribute)
        k = a[-2] if transposed else a[-1]
        return "dense", _prod(out) * k
    return "dense", 0


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
