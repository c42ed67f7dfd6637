"""Post-training int8 quantization, for users who cannot fine-tune (`quantize: method: ptq`).

Two routes, each writing one artifact:

- `onnx_static(fp32.onnx, calibration, out.onnx, method=...)`: onnxruntime static QDQ
  quantization (uint8 activations, int8 per-channel weights: what its x86 kernels fuse) with
  MinMax, Entropy or Percentile calibration.
  `quantize_static` forwards only some calibration options (symmetric, moving average,
  percentile) and silently drops `num_bins` / `num_quantized_bins`, so Entropy always ran with
  128 bins for 128 quantized bins: a threshold search over a single candidate, the full range,
  i.e. exactly MinMax (byte-identical files). Here the calibrator is built directly with the
  real options and its ranges handed to `quantize_static` through its calibration cache.
- `litert_ptq(model, calibration, out.tflite)`: PT2E post-training quantization with
  edgekd's quantizer (`ptq_quantizer`) and litert-torch's converter.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edgekd.files import atomic_path

Method = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True)
class Calibration:
    """onnxruntime calibration settings; only the fields of the chosen method are used."""

    method: Method = "minmax"
    percentile: float = 99.999
    """Percentile: the |activation| percentile taken as the range (symmetric histogram)."""
    num_bins: int = 2048
    """Entropy / Percentile: histogram bins collected per tensor."""
    num_quantized_bins: int = 128
    """Entropy: bins of the quantized distribution the KL search compares against; must be
    well below num_bins for the search to have thresholds to choose from."""
    symmetric: bool | None = None
    """Symmetric ranges; None keeps onnxruntime's default (Percentile True, others False)."""


def _calibrator_options(cal: Calibration) -> dict:
    if cal.method == "minmax":
        options: dict = {}
    elif cal.method == "entropy":
        options = {"num_bins": cal.num_bins, "num_quantized_bins": cal.num_quantized_bins}
    else:
        options = {"num_bins": cal.num_bins, "percentile": cal.percentile}
    if cal.symmetric is not None:
        options["symmetric"] = cal.symmetric
    return options


class _Reader:
    """onnxruntime CalibrationDataReader over an array, one sample per batch."""

    def __init__(self, name: str, data: np.ndarray):
        self.name, self.data, self.i = name, data.astype(np.float32), 0

    def get_next(self) -> dict | None:
        if self.i >= len(self.data):
            return None
        self.i += 1
        return {self.name: self.data[self.i - 1:self.i]}

    def rewind(self) -> None:
        self.i = 0


def calibration_ranges(model_path: Path, data: np.ndarray, cal: Calibration):
    """onnxruntime's TensorsData (per-tensor ranges) for `cal` over `data`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            model_path, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=methods[cal.method], extra_options=_calibrator_options(cal))
        calibrator.collect_data(_Reader(name, data))
        return calibrator.compute_data()


def onnx_static(model_path: str | Path, data: np.ndarray, out: str | Path,
                cal: Calibration = Calibration()) -> Path:
    """Quantize an fp32 ONNX file to QDQ int8 with onnxruntime, calibrated on `data`
    (float32, N x C x H x W, as the model takes it). Writes `out` atomically."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    model_path, out = Path(model_path), Path(out)
    ranges = calibration_ranges(model_path, data, cal)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        staged = Path(tmp) / out.name
        quantize_static(
            str(model_path), str(staged), calibration_data_reader=None,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=ranges.calibration_method, calibration_cache_path=str(cache))
        staged.replace(out)
    return out


def pt2e_ptq(model, data: np.ndarray, batch: int = 8):
    """PT2E post-training quantization of a torch model with edgekd's quantizer: capture,
    observe `data`, return the prepared (observed) model. Convert it with
    `edgekd.quant.qat.convert` (fold=True for ONNX, fold=False for LiteRT)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgekd.quant.qat import batch_dim
    from edgekd.quant.quantizer import ptq_quantizer

    x = torch.from_numpy(data.astype(np.float32))
    # Captured with at least two samples: torch.export specialises a dynamic batch of 1.
    example = x[:batch] if len(x) >= 2 else x.repeat(2, *[1] * (x.ndim - 1))
    captured = torch.export.export(copy.deepcopy(model).eval(), (example,),
                                   dynamic_shapes=({0: batch_dim()},)).module()
    prepared = prepare_pt2e(captured, ptq_quantizer())
    with torch.no_grad():
        for chunk in x.split(batch):
            prepared(chunk)
    return prepared


def litert_ptq(model, data: np.ndarray, out: str | Path) -> Path:
    """Full-integer int8 .tflite of a float torch model by PT2E post-training quantization
    calibrated on `data`. Writes `out` atomically."""
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgekd.quant.quantizer import litert_quantizer

    out = Path(out)
    converted = convert_pt2e(pt2e_ptq(model, data), fold_quantize=False)
    sample = torch.from_numpy(data[:1].astype(np.float32))
    edge = litert_torch.convert(converted, (sample,),
                                quant_config=QuantConfig(pt2e_quantizer=litert_quantizer()))
    with atomic_path(out) as tmp:
        edge.export(str(tmp))
    return out
