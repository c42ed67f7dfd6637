"""edgekd.quant.ptq: calibration methods that really differ; full-integer LiteRT PTQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.quant import graph
from edgekd.quant.ptq import Calibration, calibration_ranges, litert_ptq, onnx_static

from .conftest import SHAPE
from .models import HardSwishSE, Residual


def data(n: int = 16) -> np.ndarray:
    # a heavy tail, so that clipping methods have outliers to clip
    x = np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)
    x[0, :, 0, 0] = 8.0
    return x


def widths(fp32_residual, cal: Calibration) -> dict[str, float]:
    ranges = calibration_ranges(fp32_residual, data(), cal)
    return {name: float(np.ravel(r.range_value[1] - r.range_value[0])[0])
            for name, r in ranges.data.items()}


def test_methods_give_different_ranges(fp32_residual):
    minmax = widths(fp32_residual, Calibration("minmax"))
    entropy = widths(fp32_residual, Calibration("entropy"))
    p_low = widths(fp32_residual, Calibration("percentile", percentile=99.0))
    p_high = widths(fp32_residual, Calibration("percentile", percentile=99.999))
    names = sorted(minmax)
    assert any(entropy[n] < 0.99 * minmax[n] for n in names)  # entropy clips some tensors
    assert all(p_low[n] <= p_high[n] + 1e-6 for n in names)
    assert any(p_low[n] < 0.99 * p_high[n] for n in names)


def test_onnx_static_int8_and_close(fp32_residual, tmp_path):
    import onnxruntime as ort

    out = onnx_static(fp32_residual, data(), tmp_path / "q.onnx", Calibration("entropy"))
    counts = graph.onnx_op_counts(out)
    assert counts["ops_int8"] >= 4
    x = data(4)
    ref, got = [], []
    for path, sink in ((fp32_residual, ref), (out, got)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        sink.extend(sess.run(None, {name: x[i:i + 1]})[0] for i in range(4))
    ref, got = np.concatenate(ref), np.concatenate(got)
    assert np.abs(ref - got).max() < 0.1 * np.abs(ref).max() + 1e-3


@pytest.mark.slow
def test_litert_ptq_is_fully_integer(tmp_path):
    pytest.importorskip("litert_torch")
    torch.manual_seed(0)
    out = litert_ptq(Residual(), data(), tmp_path / "q.tflite")
    counts = graph.tflite_op_counts(out)
    assert counts["ops_float"] == 0 and counts["ops_int8"] >= 4
    assert counts["delegate_partitions"] == 1


@pytest.mark.slow
def test_litert_hardswish_and_gate_stay_in_one_nhwc_partition(tmp_path):
    """hardswish / hardsigmoid decomposed into int8 ADD / MUL with [1, 1, 1, 1] constants: no
    float op, one XNNPACK partition, and no TRANSPOSE but the one at the NCHW input."""
    pytest.importorskip("litert_torch")
    torch.manual_seed(0)
    out = litert_ptq(HardSwishSE(), data(), tmp_path / "hs.tflite")
    counts = graph.tflite_op_counts(out)
    assert counts["ops_float"] == 0 and counts["delegate_partitions"] == 1
    assert graph.tflite_op_classes(out)[("layout", "TRANSPOSE")] == 1
    assert counts["layout_ops"] == 1


@pytest.mark.slow
def test_litert_input_normalisation_runs_before_the_nhwc_transpose(tmp_path):
    """Per-channel SUB / MUL at the input stay in NCHW, ahead of the TRANSPOSE (in NHWC,
    XNNPACK's int8 broadcast over 3 channels cost ~25x more)."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.models.builders import Classifier

    torch.manual_seed(0)
    model = Classifier(Residual(), {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]})
    out = litert_ptq(model, data(), tmp_path / "normalized.tflite")
    ops = [op["op_name"] for op in Interpreter(model_path=str(out))._get_ops_details()]
    assert ops[:3] == ["SUB", "MUL", "TRANSPOSE"], ops
    assert graph.tflite_op_counts(out)["ops_float"] == 0


def test_pt2e_ptq_with_one_calibration_sample_keeps_the_batch_dynamic():
    """A one-sample calibration set used to capture a batch of 1, which torch.export
    specialises: later batches of any other size failed."""
    from edgekd.models.builders import Classifier, cnn
    from edgekd.quant.ptq import pt2e_ptq
    from edgekd.quant.qat import convert

    model = Classifier(cnn(10, 1, width=4, depth=1), {"mean": [0.5], "std": [0.25]}).eval()
    prepared = pt2e_ptq(model, np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32))
    assert convert(prepared)(torch.rand(5, 1, 8, 8)).shape == (5, 10)
