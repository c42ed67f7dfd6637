"""Latency and memory estimates for a device that cannot be reached, from the model's MACs,
parameters and activations and the device's spec figures (a roofline: the slower of compute
and memory traffic, at `estimate_efficiency` of the peak).

An estimate is always marked `measured=False`, runtime "estimate"; it says nothing about load
time, first inference or accuracy, so those metrics are absent.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.result import ProfileResult

MIB = 2**20
QDQ = ("QuantizeLinear", "DequantizeLinear")


def estimate(model: Path, device: DeviceProfile, figures: dict | None = None,
             why: str = "") -> ProfileResult:
    """Estimate `model` on `device`. `figures`: {"macs", "params", "activation_bytes",
    optional "precision": "int8" | "fp32"}; counted from the file for .onnx when None."""
    if figures is None:
        if model.suffix != ".onnx":
            raise DeviceError(f"device {device.name}: cannot estimate {model.name}: give the "
                              "model's MACs, parameters and activation bytes (estimate_inputs)"
                              + (f"; the measurement failed: {why}" if why else ""),
                              "infrastructure", "setup")
        figures = onnx_figures(model)
    precision = figures.get("precision") or ("int8" if _is_int8(model) else "fp32")
    peak = device.peak_int8_gops if precision == "int8" else device.peak_fp32_gflops
    if peak is None or device.memory_bandwidth_gbs is None:
        field = "peak_int8_gops" if precision == "int8" else "peak_fp32_gflops"
        raise DeviceError(f"device {device.name}: cannot estimate: the profile lacks {field} or "
                          "memory_bandwidth_gbs" + (f"; the measurement failed: {why}"
                                                    if why else ""), "infrastructure", "setup")
    metrics = roofline(figures, precision, peak, device)
    conditions = {"method": "roofline estimate", "precision": precision,
                  "peak_gops": peak, "memory_bandwidth_gbs": device.memory_bandwidth_gbs,
                  "efficiency": device.estimate_efficiency, "threads": device.threads,
                  **{k: figures[k] for k in ("macs", "params", "activation_bytes")}}
    if why:
        conditions["unreachable"] = why
    return ProfileResult(metrics=metrics, device=device.name, runtime="estimate",
                         measured=False, conditions=conditions)


def roofline(figures: dict, precision: str, peak_gops: float,
             device: DeviceProfile) -> dict[str, float]:
    """Latency: max(compute, traffic) at the efficiency share of the peaks; memory: runtime
    plus weights plus every activation (an upper bound: real arenas reuse buffers)."""
    weight_bytes = figures["params"] * (1 if precision == "int8" else 4)
    activation_bytes = figures["activation_bytes"]
    compute_s = 2 * figures["macs"] / (peak_gops * 1e9 * device.estimate_efficiency)
    # Weights are read once; each activation is written once and read once.
    traffic_s = (weight_bytes + 2 * activation_bytes) / (
        device.memory_bandwidth_gbs * 1e9 * device.estimate_efficiency)
    latency_ms = max(compute_s, traffic_s) * 1e3
    model_mb = (weight_bytes + activation_bytes) / MIB
    return {"latency_ms_mean": latency_ms, "latency_ms_p50": latency_ms,
            "latency_ms_p90": latency_ms, "latency_ms_p99": latency_ms,
            "model_memory_mb": model_mb, "peak_memory_mb": device.runtime_memory_mb + model_mb,
            "baseline_memory_mb": device.runtime_memory_mb}


def _is_int8(model: Path) -> bool:
    if model.suffix == ".onnx":
        from edgekd.devices.trtexec import is_quantized

        return is_quantized(model.read_bytes())
    return False


def onnx_figures(path: Path) -> dict:
    """MACs of Conv / Gemm / MatMul (float and quantized forms), parameter count and
    activation bytes (every intermediate tensor in its own dtype, except float tensors an int8
    runtime fuses away), batch 1."""
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
    macs = sum(_node_macs(node, shapes) for node in graph.node)
    views = _fused_float_tensors(graph)
    inputs = {i.name for i in graph.input}
    activations = sum(size for name, size in sizes.items()
                      if name not in initializers and name not in inputs and name not in views)
    return {"macs": int(macs), "params": int(params), "activation_bytes": int(activations)}


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


def _node_macs(node, shapes: dict[str, list[int]]) -> int:
    out = shapes.get(node.output[0]) if node.output else None
    if not out:
        return 0
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        # weight: (C_out, C_in / groups, kH, kW): each output element costs C_in/groups*k*k.
        return _prod(out) * _prod(weight[1:]) if weight else 0
    if node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shapes.get(node.input[0])
        if not a:
            return 0
        transposed = node.op_type == "Gemm" and any(
            attr.name == "transA" and attr.i for attr in node.attribute)
        k = a[-2] if transposed else a[-1]
        return _prod(out) * k
    return 0


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
