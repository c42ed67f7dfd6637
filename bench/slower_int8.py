"""The profile stage's int8-slower-than-fp32 warning, on a model built to trigger it.

    python -m bench.slower_int8 [--runs 200] [--rounds 3]

A stem conv and 12 trivial 1x1 convs on a 96x96 map, each followed by abs, which no int8 kernel
covers: quantized (onnxruntime static QDQ), every abs runs in float between a DequantizeLinear
and a QuantizeLinear, two extra passes over the map per layer for convolutions too small to
win anything back. Both files are measured as the profile stage measures (edgekd's runner on
the `local` profile, fresh process, batch 1, 1 thread), interleaved in rounds; the table shows
the int8 speed-up and the warning the profile stage would print. The test suite checks the
warning logic on given numbers (tests/quant/test_slower_warning.py); timing lives here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHAPE = (3, 96, 96)
RESULTS = Path(__file__).resolve().parent / "results"


class SlowInt8(nn.Module):
    def __init__(self, layers: int = 12, channels: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.convs:
            x = torch.abs(conv(x))
        return x.mean((2, 3))


def build(folder: Path) -> dict[str, Path]:
    from edgekd.quant import ptq

    torch.manual_seed(0)
    fp32 = folder / "slow_fp32.onnx"
    torch.onnx.export(SlowInt8().eval(), (torch.rand(1, *SHAPE),), str(fp32), dynamo=True,
                      external_data=False, opset_version=18, verbose=False)
    calibration = np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)
    int8 = ptq.onnx_static(fp32, calibration, folder / "slow_int8.onnx")
    return {"student_fp32_onnx": fp32, "student_int8_onnx": int8}


def main(argv: list[str] | None = None) -> int:
    from edgekd.devices.measure import profile
    from edgekd.devices.profiles import load_profile
    from edgekd.quant.graph import onnx_op_counts
    from edgekd.stages.profile import slower_int8_warnings, speedups

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = load_profile("local")
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
        counts = onnx_op_counts(files["student_int8_onnx"])
        p50: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(args.rounds):
            for name, path in files.items():
                result = profile(path, device, runs=args.runs, warmup=20, threads=1)
                p50[name].append(result.metrics["latency_ms_p50"])
    metrics = {f"{n}.latency_ms_p50": statistics.median(v) for n, v in p50.items()}
    metrics.update(speedups(metrics))
    warnings = slower_int8_warnings(metrics)
    print("| file | p50 ms (median of rounds) |\n|---|---|")
    for name in files:
        print(f"| {name} | {metrics[f'{name}.latency_ms_p50']:.4f} |")
    print(f"\nint8 speed-up {metrics['student_int8_onnx.int8_speedup']:.2f}x; float ops left in "
          f"the int8 file: {counts['ops_float']}; warning: {warnings or 'none'}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "slower_int8.json").write_text(json.dumps(
        {"metrics": metrics, "rounds": p50, "op_counts": counts, "warnings": warnings,
         "runs": args.runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
