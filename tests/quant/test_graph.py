"""edgekd.quant.graph: op counts on real onnxruntime / LiteRT graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.quant import graph
from edgekd.quant.onnx_qdq import optimize_qdq_onnx
from edgekd.quant.ptq import onnx_static

from .conftest import SHAPE
from .models import Residual, SlowInt8, export_onnx


def calibration(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)


def test_fp32_onnx_counts_no_int8(fp32_residual):
    counts = graph.onnx_op_counts(fp32_residual)
    assert counts["ops_int8"] == 0
    assert counts["ops_float"] >= 4  # 3 convs + gemm at least (fused or not)
    assert counts["quantize_nodes"] == counts["dequantize_nodes"] == 0


def test_signed_qdq_leaves_float_ops_and_uint8_rewrite_fuses_them(fp32_residual, tmp_path):
    """PT2E-style signed int8 activations: onnxruntime leaves the residual ops in float; the
    uint8 rewrite makes every conv / add integer, with bit-identical outputs."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgekd.quant.ptq import _Reader

    signed = tmp_path / "signed.onnx"
    quantize_static(str(fp32_residual), str(signed), _Reader("x", calibration()),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    unsigned = optimize_qdq_onnx(signed, tmp_path / "unsigned.onnx")
    before, after = graph.onnx_op_counts(signed), graph.onnx_op_counts(unsigned)
    assert after["ops_int8"] > before["ops_int8"]
    assert after["ops_float"] < before["ops_float"]
    classes = graph.onnx_op_classes(unsigned)
    assert classes[("int8", "QLinearConv")] == 3
    assert classes[("float", "Conv")] == 0

    x = calibration(4)
    outs = []
    for path in (signed, unsigned):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        outs.append(np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(4)]))
    np.testing.assert_array_equal(outs[0], outs[1])


def qdq_normalize(path, mean: float = 0.5):
    """x -> Q/DQ -> Sub(DQ(mean)) -> Q/DQ: the exported input normalisation, int8 as PT2E
    writes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value, dtype):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    inits = [const("s_in", 1 / 255, np.float32), const("z_in", -128, np.int8),
             const("mean_q", [[[[127]], [[0]], [[-64]]]], np.int8),
             const("s_mean", mean / 255, np.float32), const("z_mean", -128, np.int8),
             const("s_out", 2 / 255, np.float32), const("z_out", 0, np.int8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
             helper.make_node("DequantizeLinear", ["mean_q", "s_mean", "z_mean"], ["md"]),
             helper.make_node("Sub", ["xd", "md"], ["d"]),
             helper.make_node("QuantizeLinear", ["d", "s_out", "z_out"], ["dq"]),
             helper.make_node("DequantizeLinear", ["dq", "s_out", "z_out"], ["y"])]
    graph_ = helper.make_graph(
        nodes, "normalize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE_1)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE_1)], inits)
    model = helper.make_model(graph_, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


SHAPE_1 = [1, *SHAPE]


def test_sub_of_a_constant_becomes_an_integer_add(tmp_path):
    """The rewrite is exact (same outputs with onnxruntime's graph optimisations off); the
    fused QLinearAdd it enables rounds its own way: within one output step."""
    import onnxruntime as ort

    plain = qdq_normalize(tmp_path / "sub.onnx")
    rewritten = optimize_qdq_onnx(plain, tmp_path / "add.onnx")
    assert graph.onnx_op_classes(plain)[("float", "Sub")] == 1
    classes = graph.onnx_op_classes(rewritten)
    assert classes[("float", "Sub")] == 0 and classes[("int8", "QLinearAdd")] == 1

    x = np.random.default_rng(1).random((64, *SHAPE_1), dtype=np.float32) * 1.2 - 0.1

    def run(path, level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return np.stack([sess.run(None, {"x": xi})[0] for xi in x])

    off, on = ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    np.testing.assert_array_equal(run(plain, off), run(rewritten, off))
    assert np.abs(run(rewritten, on) - run(plain, off)).max() <= 2 / 255 + 1e-6


def test_slow_int8_model_is_mostly_float_islands(tmp_path):
    """The model built to make int8 slower: its int8 graph keeps one float op per layer with
    a Q and a DQ around it, which is what the report must show."""
    fp32 = export_onnx(SlowInt8(layers=6), SHAPE, tmp_path / "slow.onnx")
    int8 = onnx_static(fp32, calibration(), tmp_path / "slow.int8.onnx")
    counts = graph.onnx_op_counts(int8)
    classes = graph.onnx_op_classes(int8)
    assert classes[("float", "Tanh")] == 6
    assert counts["quantize_nodes"] >= 6 and counts["dequantize_nodes"] >= 6
    assert counts["ops_int8"] >= 7  # the convs themselves are integer


def test_tflite_counts_fp32(tmp_path):
    litert_torch = pytest.importorskip("litert_torch")
    torch.manual_seed(0)
    path = tmp_path / "residual.tflite"
    litert_torch.convert(Residual().eval(), (torch.rand(1, *SHAPE),)).export(str(path))
    counts = graph.tflite_op_counts(path)
    assert counts["ops_int8"] == 0 and counts["ops_float"] >= 4
    assert counts["delegate_partitions"] == 1 and counts["ops_outside_delegate"] == 0


@pytest.mark.slow
def test_hard_activation_rescale_is_dropped_exactly(tmp_path):
    """hardswish / hardsigmoid's `* 1/6` is quantized on its input's grid / 6, so the ONNX
    rewrite can drop it: one QLinearMul less per hard activation, same outputs."""
    import onnx
    import onnxruntime as ort

    from edgekd.export.writers import write_onnx
    from edgekd.quant.onnx_qdq import activations_to_uint8
    from edgekd.quant.ptq import pt2e_ptq
    from edgekd.quant.qat import convert

    from .models import HardSwishSE

    torch.manual_seed(0)
    x = calibration(16)
    converted = convert(pt2e_ptq(HardSwishSE(), x), fold=True)
    plain = write_onnx(converted, SHAPE, tmp_path / "plain.onnx", opset=18)
    rewritten = optimize_qdq_onnx(plain, tmp_path / "rewritten.onnx")
    # the reference: the same file with only the uint8 rewrite, which keeps every Mul
    reference = onnx.load(str(plain))
    activations_to_uint8(reference)
    onnx.save(reference, str(tmp_path / "reference.onnx"))
    # 2 hardswish + 1 hardsigmoid: 3 rescales dropped, leaving 2 hardswish x-muls + the gate
    assert graph.onnx_op_classes(tmp_path / "reference.onnx")[("int8", "QLinearMul")] == 6
    assert graph.onnx_op_classes(rewritten)[("int8", "QLinearMul")] == 3

    outs = []
    for path in (tmp_path / "reference.onnx", rewritten):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"input": x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    with torch.no_grad():
        torch_out = converted(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(outs[1], torch_out, atol=1e-6)
