"""Writers for deployable files, one per entry of the format table (edgekd.export.formats).

ONNX: torch.onnx.export with dynamo (needs onnxscript), weights inside the file, dynamic batch.
TFLite: litert-torch. An int8 TFLite comes from the int8 model converted without folding the
weight quantization, handed to litert-torch with a non-QAT PT2E config: this is the path that
matched the QAT model exactly on this stack (stack.md).

Every writer takes an `ExportSource` and returns a `Written`: the file and the PyTorch model
it must match (its parity reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.console import quiet
from edgekd.files import atomic_path
from edgekd.quant.int8 import Int8Model


@dataclass
class ExportSource:
    """What the export stage hands every writer."""

    fp32: nn.Module
    """The distilled student in eval mode (input N x C x H x W float32 in [0, 1])."""
    int8: Int8Model | None
    """The quantize stage's int8 model; None when the pipeline has no quantize stage."""
    input_shape: tuple[int, ...]
    """C x H x W of one input."""
    calibration_samples: Callable[[int], np.ndarray]
    """calibration_samples(n) -> n training inputs (seeded), for post-training calibration."""

    def require_int8(self, fmt: str) -> Int8Model:
        """The int8 model; ValueError naming `fmt` when the pipeline has no quantize stage."""
        if self.int8 is None:
            raise ValueError(f"format {fmt} needs a quantize stage before export")
        return self.int8


@dataclass
class Written:
    """A file a writer produced and the PyTorch model its outputs must match."""

    path: Path
    reference: nn.Module
    reference_kind: str
    """"fp32" or "int8": what the reference is (int8 files of two runtimes made from the same
    int8 model are also compared with each other)."""


def onnx_fp32(source: ExportSource, path: Path, opset: int) -> Written:
    """fp32 ONNX of the distilled student; compared with it."""
    return Written(write_onnx(source.fp32, source.input_shape, path, opset), source.fp32, "fp32")


def onnx_int8(source: ExportSource, path: Path, opset: int) -> Written:
    """QDQ int8 ONNX. From the QAT (or PT2E-calibrated) model; for `method: ptq`, onnxruntime
    calibrates the fp32 file itself with the pipeline's method, so it is compared with fp32."""
    int8 = source.require_int8("onnx_int8")
    if int8.method == "ptq":
        from edgekd.quant import ptq

        settings = {k: v for k, v in int8.calibration.items() if k != "samples"}
        fp32 = path.with_name(f".{path.stem}.fp32.onnx")
        try:
            write_onnx(source.fp32, source.input_shape, fp32, opset)
            ptq.onnx_static(fp32, source.calibration_samples(int8.calibration["samples"]), path,
                            ptq.Calibration(**settings))
        finally:
            fp32.unlink(missing_ok=True)
        return Written(path, source.fp32, "fp32")
    from edgekd.quant.onnx_qdq import optimize_qdq_onnx

    write_onnx(int8.folded, source.input_shape, path, opset)
    optimize_qdq_onnx(path)  # int8 activations -> uint8, exactly: what x86 kernels fuse
    return Written(path, int8.folded, "int8")


def tflite_fp32(source: ExportSource, path: Path, opset: int) -> Written:
    """fp32 TFLite of the distilled student; compared with it."""
    return Written(write_tflite(source.fp32, source.input_shape, path, int8=False), source.fp32,
                   "fp32")


def tflite_int8(source: ExportSource, path: Path, opset: int) -> Written:
    """Full-integer int8 TFLite from the unfolded int8 model; compared with it."""
    int8 = source.require_int8("tflite_int8")
    return Written(write_tflite(int8.unfolded, source.input_shape, path, int8=True),
                   int8.unfolded, "int8")


def write_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int) -> Path:
    """Export to ONNX (opset `opset`) with a dynamic batch dimension, atomically. Raises
    ValueError when the file would hold another opset: torch's exporter writes opset 18 and
    converts to the one asked, but where the conversion fails it keeps 18 and says nothing
    (measured with torch 2.14: 13 and 100 gave 18; 17, 20, 21, 23, 25 were honoured)."""
    import onnx

    example = torch.zeros(2, *input_shape)
    with quiet(), torch.no_grad(), atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                          opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        _strip_metadata(tmp)
        got = next((o.version for o in onnx.load(str(tmp)).opset_import if o.domain in ("",
                                                                                   "ai.onnx")),
                   None)
        if got != opset:
            raise ValueError(f"opset {opset} was asked but the exporter wrote opset {got} (it "
                             "could not convert the graph to that opset); give another opset")
    return path


def _strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (stack traces, module scopes): for a small model
    it outweighs the weights (a digits int8 file: 44 KB -> 12 KB). Computation is untouched."""
    import onnx

    model = onnx.load(str(path))
    for graph in [model.graph, *(f for f in model.functions)]:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    onnx.save(model, str(path))


def write_tflite(model: nn.Module, input_shape: tuple[int, ...], path: Path, int8: bool) -> Path:
    """Convert to TFLite at batch 1, atomically; `int8` for an unfolded converted PT2E model."""
    import litert_torch

    example = (torch.zeros(1, *input_shape),)
    kwargs = {}
    if int8:
        from litert_torch.quantize.quant_config import QuantConfig

        from edgekd.quant.quantizer import litert_quantizer

        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=litert_quantizer())
    else:
        model = model.eval()
    with quiet(), atomic_path(path) as tmp:
        litert_torch.convert(model, example, **kwargs).export(str(tmp))
    return path
