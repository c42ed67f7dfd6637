"""Quantization-aware training with torchao PT2E.

The model is captured in train mode with a dynamic batch, fake-quantizers are inserted, and it
trains like any module. Train / eval switches go through torchao's helpers (exported modules
refuse `.train()` / `.eval()`). torchao's conv-BatchNorm QAT fusion and those helpers write
BatchNorm momentum and eps as 0.1 / 1e-5 whatever the model had (torchvision's MobileNetV3 and
EfficientNet use eps 1e-3, momentum 0.01); edgekd puts each model's own values back after each
of them (restore_batchnorm).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MAX_BATCH = 1024
"""The largest batch a captured (prepared, converted, saved) graph takes: torch.export bakes
the batch range it was captured with into the graph's guards."""


def batch_dim() -> torch.export.Dim:
    """The dynamic batch dimension every PT2E capture in edgekd uses (1 to MAX_BATCH)."""
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def prepare(model: nn.Module, input_shape: tuple[int, ...], batch: int = 8) -> torch.fx.GraphModule:
    """Capture `model` (train mode, stochastic depth off: STOCHASTIC_DEPTH) and insert
    fake-quantizers for int8 QAT."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgekd.console import quiet
    from edgekd.quant.quantizer import qat_quantizer

    example = torch.randn(batch, *input_shape)
    model.train()
    for module in model.modules():
        if type(module).__name__ in STOCHASTIC_DEPTH:
            module.eval()
    settings = {f"{name}.running_var": (module.momentum, module.eps)
                for name, module in model.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm)}
    with quiet():
        captured = torch.export.export(model, (example,),
                                       dynamic_shapes=({0: batch_dim()},)).module()
        prepared = prepare_qat_pt2e(captured, qat_quantizer())
    prepared.meta["edgekd_batchnorm"] = settings
    restore_batchnorm(prepared)
    return prepared


def restore_batchnorm(model: torch.fx.GraphModule) -> int:
    """Give each batch_norm node of a captured model its module's momentum and eps again
    (`model.meta["edgekd_batchnorm"]`: {running_var buffer: (momentum, eps)}, from `prepare`),
    including the eps of the running-std term of torchao's conv-BN QAT fusion, which scales the
    weights before fake-quantization. A momentum of None (a cumulative average) is left as
    captured. Returns the number of literals changed."""
    settings = model.meta.get("edgekd_batchnorm", {})
    changed = sum(_own_literals(node, settings) for node in model.graph.nodes)
    if changed:
        model.recompile()
    return changed


def _own_literals(node: torch.fx.Node, settings: dict) -> int:
    """Set one node's BatchNorm literals from `settings` (see restore_batchnorm)."""
    if node.op != "call_function":
        return 0
    args = list(node.args)
    if "batch_norm" in str(node.target) and hasattr(node.target, "_schema"):
        names = [a.name for a in node.target._schema.arguments]
        var = getattr(args[4], "target", None) if len(args) > 4 else None
        if var not in settings or "eps" not in names or len(args) <= names.index("eps"):
            return 0
        momentum, eps = settings[var]
        wanted = {names.index("eps"): eps}
        if momentum is not None and "momentum" in names:
            wanted[names.index("momentum")] = momentum
    elif node.target == torch.ops.aten.add.Tensor and len(args) == 2 \
            and getattr(args[0], "target", None) in settings \
            and isinstance(args[1], float):  # running_var + eps
        wanted = {1: settings[args[0].target][1]}
    else:
        return 0
    changed = 0
    for index, value in wanted.items():
        if args[index] != value:
            args[index], changed = value, changed + 1
    node.args = tuple(args)
    return changed


STOCHASTIC_DEPTH = ("StochasticDepth", "DropPath")
"""Modules (torchvision's, timm's) that drop residual branches at random in train mode. They
are captured in eval mode (identity): in train mode torch.export records their random ops
(`aten.bernoulli_`), which the eval switch keeps, so the int8 files would drop branches at
random at inference (the int8 ONNX of efficientnet_b0 had 9 RandomUniformLike nodes) and
ExecuTorch refuses them. QAT then fine-tunes without stochastic depth, as fine-tuning does."""


def set_mode(prepared: torch.fx.GraphModule, training: bool) -> None:
    """Switch a captured PT2E model between train and eval (its `.train()` / `.eval()` raise)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(prepared)
    restore_batchnorm(prepared)


def convert(prepared: torch.fx.GraphModule, fold: bool = True) -> torch.fx.GraphModule:
    """The int8 model: fake-quant replaced by quantize / dequantize ops.

    `fold=True` folds weight quantization into int8 constants (for ONNX); LiteRT's converter
    wants `fold=False`. The prepared model is copied, so it can be converted both ways.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgekd.console import quiet

    model = copy.deepcopy(prepared)
    set_mode(model, training=False)
    with quiet(), _fold_present_convolutions_only(), \
            _fold_with_own_eps(model.meta.get("edgekd_batchnorm", {})):
        model = convert_pt2e(model, fold_quantize=fold)
    biases_on_int32_grid(model)
    return model


@contextmanager
def _fold_with_own_eps(settings: dict) -> Iterator[None]:
    """While converting, fold each BatchNorm into its convolution with the model's own eps:
    torchao folds with the batch_norm node of its replacement pattern, whose eps is 1e-5."""
    from torchao.quantization.pt2e import qat_utils

    fold = qat_utils.fold_bn_weights_into_conv_node

    def own_eps(conv_node, conv_weight, conv_bias, bn_node, m, *args, **kwargs):
        _own_literals(bn_node, settings)
        return fold(conv_node, conv_weight, conv_bias, bn_node, m, *args, **kwargs)

    qat_utils.fold_bn_weights_into_conv_node = own_eps
    try:
        yield
    finally:
        qat_utils.fold_bn_weights_into_conv_node = fold


@contextmanager
def _fold_present_convolutions_only() -> Iterator[None]:
    """While converting, skip torchao's QAT conv-bn folding for the convolution kinds the graph
    does not hold (conv2d always runs, so its graph clean-up does too).

    convert_pt2e folds conv-bn for conv1d, conv2d, conv_transpose1d and conv_transpose2d alike,
    tracing each kind's 24 match / replacement patterns with torch.export (~0.4 s a trace)
    whatever the model holds; patterns of an absent kind cannot match. Measured on 2 cores,
    both conversions of a model: my_models.build_student 47 -> 14 s, timm
    mobilenetv3_small_050 80 -> 20 s, resnet18 62 -> 16 s, with the same graph code and
    bit-identical outputs.
    """
    from torchao.quantization.pt2e import qat_utils

    fold = qat_utils._fold_conv_bn_qat_helper

    def present_only(model, conv_fn, example_inputs, is_cuda):
        op = f"aten.{conv_fn.__name__}."
        if conv_fn.__name__ == "conv2d" or any(str(n.target).startswith(op)
                                                for n in model.graph.nodes):
            return fold(model, conv_fn, example_inputs, is_cuda)
        return model

    qat_utils._fold_conv_bn_qat_helper = present_only
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = fold


def biases_on_int32_grid(model: torch.fx.GraphModule) -> int:
    """Round each conv / linear bias of a converted model to the int32 grid (input scale x
    weight scale) that onnxruntime and LiteRT store it on; in place, returns how many.

    The converted model keeps float biases, so it differed from both int8 runtimes by up to
    half a grid step per channel before any rounding of its own: on the digits student, one
    logit in 4,500 came out two output steps away from the int8 files (which agree with each
    other exactly). With the biases on the grid it computes what the files compute, up to
    float32 summation order.
    """
    ops = torch.ops.quantized_decomposed
    weight_dq = (ops.dequantize_per_channel.default, ops.dequantize_per_tensor.default)
    count = 0
    for node in model.graph.nodes:
        if node.target not in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default) \
                or len(node.args) < 3:
            continue
        x, w, bias = node.args[:3]
        if not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr"
                and getattr(x, "target", None) == ops.dequantize_per_tensor.default
                and getattr(w, "target", None) in weight_dq and not isinstance(x.args[1],
                                                                               torch.fx.Node)):
            continue
        values = _constant(model, bias)
        step = float(x.args[1]) * _constant(model, w.args[1]).to(torch.float64)
        with torch.no_grad():
            values.copy_((torch.round(values.to(torch.float64) / step) * step).to(values.dtype))
        count += 1
    return count


def _constant(model: torch.nn.Module, arg) -> torch.Tensor:
    from edgekd.quant.quantizer import attribute

    return attribute(model, arg.target) if isinstance(arg, torch.fx.Node) \
        else torch.tensor(float(arg))
