"""Quantization-aware training with torchao PT2E.

The model is captured in train mode with a dynamic batch, fake-quantizers are inserted, and it
trains like any module. Train / eval switches go through torchao's helpers (exported modules
refuse `.train()` / `.eval()`); those helpers reset BatchNorm momentum and eps to 0.1 / 1e-5,
which is what edgekd's students use anyway.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def prepare(model: nn.Module, input_shape: tuple[int, ...], batch: int = 8) -> torch.fx.GraphModule:
    """Capture `model` and insert fake-quantizers for int8 QAT."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd.console import quiet
    from edgekd.quant.quantizer import qat_quantizer

    example = torch.randn(batch, *input_shape)
    dim = torch.export.Dim("batch", min=1, max=1024)
    with quiet():
        captured = torch.export.export(model.train(), (example,),
                                       dynamic_shapes=({0: dim},)).module()
        return prepare_qat_pt2e(captured, qat_quantizer())


def set_mode(prepared: torch.fx.GraphModule, training: bool) -> None:
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(prepared)


def convert(prepared: torch.fx.GraphModule, fold: bool = True) -> torch.fx.GraphModule:
    """The int8 model: fake-quant replaced by quantize / dequantize ops.

    `fold=True` folds weight quantization into int8 constants (for ONNX); LiteRT's converter
    wants `fold=False`. The prepared model is copied, so it can be converted both ways.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgekd.console import quiet

    model = copy.deepcopy(prepared)
    set_mode(model, training=False)
    with quiet():
        return convert_pt2e(model, fold_quantize=fold)
