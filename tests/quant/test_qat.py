"""edgekd.quant.qat: the converted model computes what the int8 files compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_converted_biases_sit_on_the_int32_grid_the_runtimes_use(tmp_path):
    """Each conv / linear bias is a whole number of (input scale x weight scale) steps, so
    the PyTorch model and onnxruntime's integer kernels agree within one output step."""
    import onnxruntime as ort

    from edgekd.export.writers import write_onnx
    from edgekd.models.builders import Classifier, cnn
    from edgekd.quant import qat
    from edgekd.quant.quantizer import attribute

    torch.manual_seed(0)
    prepared = qat.prepare(Classifier(cnn(10, 1, width=8, depth=2), {"mean": [0.5], "std": [0.25]}),
                           (1, 8, 8))
    x = torch.rand(256, 1, 8, 8)
    with torch.no_grad():
        prepared(x)
    converted = qat.convert(prepared, fold=True)
    ops = torch.ops.quantized_decomposed
    checked = 0
    for node in converted.graph.nodes:
        if node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
            x_dq, w_dq, bias = node.args[:3]
            assert x_dq.target == ops.dequantize_per_tensor.default
            step = x_dq.args[1] * attribute(converted, w_dq.args[1].target).double()
            units = attribute(converted, bias.target).double() / step
            assert torch.allclose(units, units.round(), atol=1e-3)
            checked += 1
    assert checked == 3

    path = write_onnx(converted, (1, 8, 8), tmp_path / "int8.onnx", opset=18)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = converted(x).numpy()
    step = np.min(np.diff(np.unique(want)))
    assert np.abs(got - want).max() <= step * 1.001
