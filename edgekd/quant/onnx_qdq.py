"""Make a QDQ ONNX file the shape onnxruntime's CPU kernels fuse.

PT2E (like LiteRT) quantizes activations to signed int8. onnxruntime on x86 prefers uint8
activations with int8 weights, and its `QDQS8ToU8Transformer` converts the int8 Q/DQ pairs it
can to uint8 at load time, but only pairs whose Q feeds a single DQ. Where one Q feeds two
DQs (every residual branch: the tensor goes to the next conv and to the Add), the pair stays
int8, so the ops on each side see int8 on one input and uint8 on the other, fail the QDQ
selectors' "same type in and out" check, and run as float Conv / Add between DQ and Q.
(mobilenet_v2, 96x96: 15 of 52 convs and all 10 adds stayed float.)

Re-expressing every activation Q/DQ as uint8 (zero point + 128, same scale) is exact: the
integer grid is shifted, the real values it represents are the same. Weights stay int8.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.files import atomic_path

_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _weight_dqs(model) -> set[str]:
    """Names of DQ nodes on a constant that only feeds the weight / bias input of a conv or
    matmul: those stay int8 (onnxruntime's u8s8 kernels). A constant DQ feeding an Add or Mul
    (the 3 and 1/6 of hardsigmoid) is an activation operand and must match the other input."""
    init = {i.name for i in model.graph.initializer}
    users: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            users.setdefault(name, []).append((node.op_type, k))
    return {node.name for node in model.graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in init
            and all(op in _WEIGHT_OPS and k >= 1 for op, k in users.get(node.output[0], []))}


def _producers(model) -> dict:
    """Tensor name -> the node that outputs it."""
    return {out: node for node in model.graph.node for out in node.output}


def _users(model) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def _activation_zero_points(model) -> set[str]:
    """Zero-point initializers of Q/DQ nodes on activations (not on weight constants)."""
    from onnx import TensorProto

    init = {i.name: i for i in model.graph.initializer}
    weights = _weight_dqs(model)
    names = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.name in weights:
            continue  # a weight: onnxruntime wants int8 weights
        zero = init.get(node.input[2])
        if zero is not None and zero.data_type == TensorProto.INT8:
            names.add(node.input[2])
    return names


def activations_to_uint8(model) -> int:
    """Rewrite `model` (onnx.ModelProto, in place) so activation Q/DQ use uint8; returns the
    number of zero points changed. Zero points shared with a weight DQ are duplicated."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    names = _activation_zero_points(model)
    weights = _weight_dqs(model)
    init = {i.name: i for i in model.graph.initializer}

    def shifted(name: str) -> str:  # int8 initializer + 128 as uint8, same real values
        new = f"{name}__uint8"
        if new not in init:
            values = numpy_helper.to_array(init[name]).astype(np.int16) + 128
            init[new] = numpy_helper.from_array(values.astype(np.uint8), new)
            model.graph.initializer.append(init[new])
        return new

    uint8_tensors = set()
    for node in model.graph.node:
        if (node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3
                or node.input[2] not in names or node.name in weights):
            continue
        node.input[2] = shifted(node.input[2])
        if node.op_type == "QuantizeLinear":
            uint8_tensors.add(node.output[0])
        elif node.input[0] in init:  # a quantized constant operand (Add / Mul)
            node.input[0] = shifted(node.input[0])
    for info in list(model.graph.value_info) + list(model.graph.output):
        if info.name in uint8_tensors:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    return len(names)


def global_pool_from_reduce_mean(model) -> int:
    """ReduceMean over H, W (keepdims) -> GlobalAveragePool, in place; returns how many.

    The exporter writes adaptive_avg_pool2d(1) as ReduceMean, which onnxruntime has no integer
    kernel for; GlobalAveragePool between DQ and Q fuses into QLinearGlobalAveragePool.
    """
    from onnx import helper, numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    count = 0
    for k, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or len(node.input) < 2 or node.input[1] not in init:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = sorted(int(a) for a in init[node.input[1]].ravel())
        if attrs.get("keepdims", 1) != 1 or axes not in ([2, 3], [-2, -1]):
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                name=node.name)
        model.graph.node.remove(node)
        model.graph.node.insert(k, pool)
        count += 1
    return count


def add_from_sub(model) -> int:
    """Sub(a, DQ(constant)) -> Add(a, DQ(-constant)), in place; returns how many.

    onnxruntime has QLinearAdd but no QLinearSub, so a quantized Sub (the model's input
    normalisation, x - mean) runs in float between DQ and Q, with the constant dequantized on
    every run. Negating a quantized constant is exact: s * (q - z) = -s * (~q - ~z), where ~ is
    the bitwise complement (-1 - v for int8, 255 - v for uint8), which stays in range.
    """
    import numpy as np
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    producer, users = _producers(model), _users(model)
    count = 0
    for node in model.graph.node:
        dq = producer.get(node.input[1]) if node.op_type == "Sub" else None
        if (dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3
                or dq.input[0] not in init or dq.input[2] not in init
                or len(users[dq.output[0]]) != 1):
            continue
        for k in (0, 2):  # the constant and its zero point, complemented as new initializers
            name = f"{dq.input[k]}__negated"
            if name not in init:
                init[name] = numpy_helper.from_array(
                    np.invert(numpy_helper.to_array(init[dq.input[k]])), name)
                model.graph.initializer.append(init[name])
            dq.input[k] = name
        node.op_type = "Add"
        count += 1
    return count


def drop_rescales(model) -> int:
    """DQ(q, s, z) -> Mul(DQ(constant k)) -> Q(s * k, z): the integers pass through unchanged,
    so the consumers of the Q read q itself (their DQ already carries s * k); in place,
    returns how many. edgekd's quantizer gives the `* 1/6` of hardswish / hardsigmoid
    exactly these parameters (`edgekd.quant.quantizer._annotate_rescale`).
    """
    import numpy as np
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer, users = _producers(model), _users(model)

    def dequantized_constant(name: str):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 \
                or not all(i in init for i in dq.input):
            return None
        q, s, z = (init[i] for i in dq.input)
        return (q.astype(np.float64) - z.astype(np.float64)) * s.astype(np.float64)

    removed = []
    for mul in model.graph.node:
        if mul.op_type != "Mul" or len(users.get(mul.output[0], [])) != 1:
            continue
        q = users[mul.output[0]][0]
        dq = producer.get(mul.input[0])
        k = dequantized_constant(mul.input[1])
        if (q.op_type != "QuantizeLinear" or dq is None or dq.op_type != "DequantizeLinear"
                or k is None or k.size != 1 or len(q.input) < 3 or len(dq.input) < 3
                or not all(i in init for i in (*q.input[1:], *dq.input[1:]))):
            continue
        s_in, z_in = init[dq.input[1]], init[dq.input[2]]
        s_out, z_out = init[q.input[1]], init[q.input[2]]
        if (s_in.size != 1 or z_in.dtype != z_out.dtype or int(z_in) != int(z_out)
                or abs(float(s_in) * float(k.ravel()[0]) / float(s_out) - 1) > 1e-5):
            continue
        for node in users.get(q.output[0], []):
            for i, name in enumerate(node.input):
                if name == q.output[0]:
                    node.input[i] = dq.input[0]
        removed += [mul, q]
    for node in removed:
        model.graph.node.remove(node)
    _drop_dead_nodes(model)
    return len(removed) // 2


def _drop_dead_nodes(model) -> None:
    """Remove nodes none of whose outputs is used (repeatedly: a chain dies together)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {name for node in model.graph.node for name in node.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


def optimize_qdq_onnx(src: str | Path, dst: str | Path | None = None) -> Path:
    """Rewrite a QDQ ONNX file (PT2E export) for onnxruntime's CPU kernels; in place unless
    `dst` is given. Returns the written path. The values are unchanged bit for bit under ONNX
    semantics (onnxruntime with graph optimisations off); fused, the new QLinearAdd rounds its
    own way, within one step."""
    import onnx

    src = Path(src)
    dst = Path(dst) if dst is not None else src
    model = onnx.load(str(src))
    activations_to_uint8(model)
    global_pool_from_reduce_mean(model)
    add_from_sub(model)
    drop_rescales(model)
    _drop_unused_initializers(model)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst
