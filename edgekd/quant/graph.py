"""How much of an exported graph really runs in integer: op counts per artifact.

A QDQ ONNX file says little by itself: onnxruntime decides at load time which
DequantizeLinear -> op -> QuantizeLinear groups it fuses into integer kernels (QLinearConv,
QLinearAdd, QGemm, ...) and which ops it leaves in float between a DQ and a Q. So the ONNX
count is taken on the graph onnxruntime itself optimised (`SessionOptions.
optimized_model_filepath`). A .tflite file is counted from the interpreter's op list, and its
XNNPACK delegate partitions from the same model with the default delegate applied: every float
island splits the delegate, and each partition boundary costs a hand-over. ExecuTorch .pte
files are counted from the file by edgekd.export.executorch.pte_op_counts.

Each public function returns plain numbers, so the pipeline report can store them as
`<artifact>.ops_int8`, `<artifact>.ops_float`, ...
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

# Ops that carry no arithmetic of their own: counted neither int8 nor float.
_LAYOUT_OPS = frozenset({
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Gather",
    "Constant", "Cast", "Concat", "Slice", "Expand",
    "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "SHAPE",
})
_ONNX_Q = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})
_ONNX_DQ = frozenset({"DequantizeLinear"})
# onnxruntime's fused integer kernels; QGemm with no output scale (7 inputs) returns float.
_ONNX_INT_OPS = frozenset({"QGemm", "QAttention", "ConvInteger", "MatMulInteger",
                           "MatMulIntegerToFloat", "QLinearMatMul"})


def _onnx_optimised(path: Path, level: str) -> onnx.ModelProto:  # noqa: F821
    import onnx
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3  # the dump warns that NCHWc layouts are CPU-specific
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def _onnx_integer_tensors(model) -> set[str]:
    """Names of integer-typed activation tensors, by forward propagation over the nodes."""
    from onnx import TensorProto

    integer = {i.name for i in model.graph.input
               if i.type.tensor_type.elem_type in (TensorProto.INT8, TensorProto.UINT8)}
    for node in model.graph.node:  # ONNX node lists are topologically sorted
        op = node.op_type
        if op in _ONNX_DQ:
            continue
        if (op in _ONNX_Q or op.startswith("QLinear")
                or (op in _ONNX_INT_OPS and not (op == "QGemm" and len(node.input) < 8))):
            integer.update(node.output)
        elif node.input and node.input[0] in integer and op not in ("Shape",):
            integer.update(node.output)
    return integer


def onnx_op_classes(path: str | Path, level: str = "all") -> Counter:
    """`Counter` of (class, op_type) over the graph onnxruntime runs, class one of "int8",
    "float", "quantize", "dequantize", "layout". The detail behind `onnx_op_counts`."""
    model = _onnx_optimised(Path(path), level)
    integer = _onnx_integer_tensors(model)
    classes: Counter = Counter()
    for node in model.graph.node:
        op = node.op_type
        if op in _ONNX_Q:
            kind = "quantize"
        elif op in _ONNX_DQ:
            kind = "dequantize"
        elif op in _LAYOUT_OPS:
            kind = "layout"
        elif node.output and node.output[0] in integer:
            kind = "int8"
        else:
            kind = "float"
        classes[(kind, op)] += 1
    return classes


def onnx_op_counts(path: str | Path, level: str = "all") -> dict[str, int]:
    """Integer vs float ops of an ONNX file as onnxruntime (CPU) runs it.

    `ops_int8`: fused integer kernels (QLinear*, QGemm, ...) and ops that run directly on
    int8 tensors (MaxPool after its Q/DQ pair is dropped); `ops_float`: arithmetic left in
    float, which for a QDQ model means an unfused DQ -> op -> Q group (or float pre/post
    processing); `quantize` / `dequantize`: the Q / DQ nodes left, each a pass over a tensor;
    `layout_ops`: transposes / reshapes, which move data without arithmetic.
    """
    classes = onnx_op_classes(path, level)
    total: Counter = Counter()
    for (kind, _op), n in classes.items():
        total[kind] += n
    return {"ops_int8": total["int8"], "ops_float": total["float"],
            "quantize_nodes": total["quantize"], "dequantize_nodes": total["dequantize"],
            "layout_ops": total["layout"]}


def _tflite_ops(path: Path) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():  # the public API has no op list
        outputs = [dtypes[i] for i in op["outputs"] if i >= 0]
        ops.append({"op": op["op_name"], "out": outputs[0] if outputs else None})
    return ops


def tflite_op_classes(path: str | Path) -> Counter:
    """`Counter` of (class, op_name) over a .tflite model, classes as in `onnx_op_classes`."""
    import numpy as np

    classes: Counter = Counter()
    for op in _tflite_ops(Path(path)):
        name = op["op"]
        if name == "QUANTIZE":
            kind = "quantize"
        elif name == "DEQUANTIZE":
            kind = "dequantize"
        elif name in _LAYOUT_OPS:
            kind = "layout"
        elif op["out"] is not None and np.issubdtype(op["out"], np.integer):
            kind = "int8"
        else:
            kind = "float"
        classes[(kind, name)] += 1
    return classes


def _execution_plan(ops: list[dict], outputs: list[int]) -> list[dict]:
    """The nodes the interpreter runs after delegation, walking back from the outputs.

    `_get_ops_details()` lists the original nodes and, after them, one DELEGATE node per
    partition; a node replaced by a partition is no longer run, but stays in that list.
    """
    producer = {}
    for op in ops:  # DELEGATE nodes come last, so they win for the tensors they produce
        for t in op["outputs"]:
            producer[int(t)] = op
    plan: dict[int, dict] = {}
    needed = list(outputs)
    while needed:
        op = producer.get(int(needed.pop()))
        if op is None or op["index"] in plan:
            continue
        plan[op["index"]] = op
        needed.extend(int(t) for t in op["inputs"] if t >= 0)
    return list(plan.values())


def tflite_delegate_partitions(path: str | Path) -> tuple[int, int]:
    """(XNNPACK delegate partitions, ops run outside them) with LiteRT's default delegate."""
    partitions, _inside, outside = _tflite_delegation(Path(path))
    return partitions, outside


def _tflite_delegation(path: Path) -> tuple[int, int, int]:
    """(partitions, ops inside them, ops outside them) with LiteRT's default delegate."""
    ops, plan = _delegated_plan(path)
    partitions = sum(1 for op in plan if op["op_name"] == "DELEGATE")
    outside = len(plan) - partitions
    original = sum(1 for op in ops if op["op_name"] != "DELEGATE")
    return partitions, original - outside, outside


def tflite_ops_outside_delegate(path: str | Path) -> Counter:
    """`Counter` of the op names LiteRT runs outside the XNNPACK delegate."""
    _ops, plan = _delegated_plan(Path(path))
    return Counter(op["op_name"] for op in plan if op["op_name"] != "DELEGATE")


def _delegated_plan(path: Path) -> tuple[list[dict], list[dict]]:
    """(every op of the model, the ops LiteRT runs with its default delegate applied)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.console import quiet

    with quiet():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    outputs = [d["index"] for d in interpreter.get_output_details()]
    return ops, _execution_plan(ops, outputs)


def tflite_op_counts(path: str | Path) -> dict[str, float]:
    """Integer vs float ops of a .tflite model, and how the XNNPACK delegate splits it.

    `delegate_partitions` above 1 means float (or unsupported) ops cut the graph; each cut
    costs a hand-over between XNNPACK and the reference kernels. `ops_in_delegate` /
    `ops_outside_delegate` count the model's ops XNNPACK takes and those it leaves;
    `delegated_ops` is the share it takes (as for ExecuTorch files; `min_delegated_ops`).
    `layout_ops` counts the TRANSPOSE / RESHAPE ops the converter left (an op it kept in NCHW
    costs two transposes).
    """
    classes = tflite_op_classes(path)
    total: Counter = Counter()
    for (kind, _op), n in classes.items():
        total[kind] += n
    partitions, inside, outside = _tflite_delegation(Path(path))
    return {"ops_int8": total["int8"], "ops_float": total["float"],
            "quantize_nodes": total["quantize"], "dequantize_nodes": total["dequantize"],
            "layout_ops": total["layout"], "delegate_partitions": partitions,
            "ops_in_delegate": inside, "ops_outside_delegate": outside,
            "delegated_ops": inside / (inside + outside) if inside + outside else 1.0}
