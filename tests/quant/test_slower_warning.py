"""The profile stage's int8-slower-than-fp32 warning: its logic on given numbers, and the
model built to trigger it really keeps float ops between Q/DQ pairs. Timing it is a benchmark
(bench/slower_int8.py), never a test."""

import numpy as np
import torch

from edgekd.quant import graph, ptq
from edgekd.stages.profile import slower_int8_warnings, speedups

from .models import SlowInt8, export_onnx


def test_slow_model_keeps_float_ops_between_quantize_pairs(tmp_path):
    shape = (3, 96, 96)
    # abs: cheap in float, but no int8 kernel, so int8 pays a DQ and a Q pass around each one
    fp32 = export_onnx(SlowInt8(layers=12, activation=torch.abs), shape,
                       tmp_path / "slow_fp32.onnx")
    calibration = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    int8 = ptq.onnx_static(fp32, calibration, tmp_path / "slow_int8.onnx")
    counts = graph.onnx_op_counts(int8)
    assert counts["ops_float"] >= 8  # every abs stays float between DQ and Q


def test_int8_slower_than_fp32_is_flagged():
    metrics = {"student_fp32_onnx.latency_ms_p50": 1.0, "student_int8_onnx.latency_ms_p50": 1.6,
               "student_fp32_tflite.latency_ms_p50": 2.0,
               "student_int8_tflite.latency_ms_p50": 1.0}
    found = speedups(metrics)
    assert found == {"student_int8_onnx.int8_speedup": 0.625,
                     "student_int8_tflite.int8_speedup": 2.0}
    (warning,) = slower_int8_warnings(found)
    assert warning == ("student_int8_onnx: int8 is SLOWER than fp32 on the same runtime "
                       "(0.62x the speed)")


def test_no_warning_when_int8_is_faster():
    metrics = {"student_fp32_onnx.latency_ms_p50": 2.0, "student_int8_onnx.latency_ms_p50": 1.0,
               "student_fp32_tflite.latency_ms_p50": 2.0}
    assert speedups(metrics) == {"student_int8_onnx.int8_speedup": 2.0}
    assert slower_int8_warnings(speedups(metrics)) == []
