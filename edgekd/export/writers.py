"""ONNX and TFLite writers.

ONNX: torch.onnx.export with dynamo (needs onnxscript), weights inside the file, dynamic batch.
TFLite: litert-torch. An int8 TFLite comes from the QAT model converted without folding the
weight quantization (`convert(fold=False)`), handed to litert-torch with a non-QAT PT2E config:
this is the path that matched the QAT model exactly on this stack (stack.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.console import quiet


def write_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int) -> Path:
    """Export to ONNX with a dynamic batch dimension; written to a temp name, then renamed."""
    example = torch.zeros(2, *input_shape)
    tmp = path.with_name(f".{path.name}.tmp")
    with quiet(), torch.no_grad():
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                          opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    _strip_metadata(tmp)
    tmp.replace(path)
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
    """Convert to TFLite at batch 1; `int8` for a converted (fold=False) PT2E model."""
    import litert_torch

    example = (torch.zeros(1, *input_shape),)
    kwargs = {}
    if int8:
        from litert_torch.quantize.quant_config import QuantConfig

        from edgekd.quant.quantizer import litert_quantizer

        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=litert_quantizer())
    else:
        model = model.eval()
    tmp = path.with_name(f".{path.name}.tmp")
    with quiet():
        litert_torch.convert(model, example, **kwargs).export(str(tmp))
    tmp.replace(path)
    return path
