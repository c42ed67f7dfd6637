"""A tiny CNN as fp32 / int8 ONNX and TFLite with its data: the models the device and image
tests run (tests/conftest.py's `models` fixture), built once and cached."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

MODEL_FILES = {"data": "data.npz", "onnx_fp32": "tiny_fp32.onnx", "onnx_int8": "tiny_int8.onnx",
               "tflite_fp32": "tiny_fp32.tflite", "tflite_int8": "tiny_int8.tflite"}


def cached_models() -> dict[str, Path]:
    """A tiny CNN as fp32 / int8 ONNX and fp32 / int8 TFLite, plus test data (`data`) whose
    labels are the fp32 model's own predictions, so accuracy 1.0 is reachable.

    Built once and kept under ~/.cache/edgekd/test-models, keyed by this file and the
    converter versions (conversion takes 10-30 s; the device tests are not about it)."""
    from importlib.metadata import version

    key = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("torch", "litert-torch", "torchao", "onnxruntime", "onnx"):
        key.update(version(package).encode())
    cache = Path.home() / ".cache" / "edgekd" / "test-models" / key.hexdigest()[:16]
    paths = {name: cache / file for name, file in MODEL_FILES.items()}
    if not all(p.exists() for p in paths.values()):
        building = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        building.mkdir(parents=True, exist_ok=True)
        build_models(building)
        shutil.rmtree(cache, ignore_errors=True)
        building.rename(cache)
    return paths


def build_models(out: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(out / "data.npz", x=x, y=y)
    example = (torch.from_numpy(x[:1]),)
    paths = {name: out / file for name, file in MODEL_FILES.items()}
    torch.onnx.export(model, example, paths["onnx_fp32"], dynamo=True, external_data=False,
                      opset_version=18)
    _onnx_int8(paths["onnx_fp32"], paths["onnx_int8"], x)
    _tflite(model, example, x, paths["tflite_fp32"], paths["tflite_int8"])


def _onnx_int8(source: Path, target: Path, x: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            import onnx

            name = onnx.load(str(source)).graph.input[0].name
            self.items = iter([{name: x[i:i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(target), Reader(), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def _tflite(model, example, x: np.ndarray, fp32: Path, int8: Path) -> None:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    litert_torch.convert(model, example).export(str(fp32))
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    for i in range(16):
        prepared(torch.from_numpy(x[i:i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(int8))
