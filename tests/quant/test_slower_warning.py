"""The profile stage's int8-slower-than-fp32 warning, on a model built to trigger it."""

import numpy as np
import torch

from edgekd.devices.measure import profile
from edgekd.devices.profiles import load_profile
from edgekd.quant import graph, ptq
from edgekd.stages.profile import slower_int8_warnings, speedups

from .models import SlowInt8, export_onnx


def test_int8_slower_than_fp32_is_flagged(tmp_path):
    shape = (3, 96, 96)
    # abs: cheap in float, but no int8 kernel, so int8 pays a DQ and a Q pass around each one
    fp32 = export_onnx(SlowInt8(layers=12, activation=torch.abs), shape,
                       tmp_path / "slow_fp32.onnx")
    calibration = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    int8 = ptq.onnx_static(fp32, calibration, tmp_path / "slow_int8.onnx")
    counts = graph.onnx_op_counts(int8)
    assert counts["ops_float"] >= 8  # every tanh stays float between DQ and Q

    device = load_profile("local")
    metrics = {}
    for name, path in (("student_fp32_onnx", fp32), ("student_int8_onnx", int8)):
        result = profile(path, device, runs=60, warmup=5, threads=1)
        metrics.update({f"{name}.{k}": v for k, v in result.metrics.items()})
    metrics.update(speedups(metrics))
    ratio = metrics["student_int8_onnx.int8_speedup"]
    print(f"int8 speed-up {ratio:.2f}")
    assert ratio < 1, f"int8 was not slower ({ratio:.2f}x); the model no longer triggers it"
    (warning,) = slower_int8_warnings(metrics)
    assert warning.startswith("student_int8_onnx: int8 is SLOWER than fp32")


def test_no_warning_when_int8_is_faster():
    metrics = {"student_fp32_onnx.latency_ms_p50": 2.0, "student_int8_onnx.latency_ms_p50": 1.0,
               "student_fp32_tflite.latency_ms_p50": 2.0}
    assert speedups(metrics) == {"student_int8_onnx.int8_speedup": 2.0}
    assert slower_int8_warnings(speedups(metrics)) == []
