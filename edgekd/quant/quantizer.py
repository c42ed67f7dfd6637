"""The one place edgekd names torchao's quantizer, and what it adds to it.

XNNPACKQuantizer lives under a private torchao path (`torchao.testing.pt2e`) that warns it is
deprecated; torchao is pinned exactly in constraints.txt and nothing else imports it.

XNNPACKQuantizer alone leaves ops in float that both runtimes can run in int8, and every
float op costs a dequantize / quantize pair and (LiteRT) a split of the XNNPACK delegate:

- conv[-bn]-hardtanh (ReLU6) is not a fused pattern: the conv output gets its own Q/DQ and the
  clamp runs in float behind it. Observing after the clamp instead lets onnxruntime drop the
  Clip as made redundant by the Q, and the TFLite converter fuse it into the conv.
- hardswish, hardsigmoid and sigmoid are not annotated at all (mobilenet_v3's activations and
  squeeze-excite gate); hardswish / hardsigmoid are decomposed into int8 add-clamp / mul, and
  sigmoid gets the fixed output parameters TFLite needs for a [0, 1] output (scale 1/256,
  zero point -128).
- standalone hardtanh / relu, mean and sub are not annotated either.

And it shapes what litert-torch and onnxruntime then make of the graph: scalar constants
become [1, 1, 1, 1] tensors and the input normalisation's constants [C, 1, 1], so the
converter puts those ops where XNNPACK runs them fast (`_constants_at_rank`,
`_input_constants_nchw`), and hardsigmoid's `* 1/6` is quantized so that its integers pass
through unchanged, which the ONNX rewrite drops (`_annotate_rescale`).

`edge_quantizer()` adds those annotations around XNNPACKQuantizer's own; `qat_quantizer()`
is what QAT trains with. Activations are signed int8 as LiteRT wants them; the ONNX export
flips them to uint8 afterwards (`edgekd.quant.onnx_qdq.optimize_qdq_onnx`), which is exact.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

_HARDTANH = ("hardtanh.default", "hardtanh_.default")
_HARD_ACTIVATIONS = ("hardsigmoid.default", "hardsigmoid_.default", "hardswish.default",
                     "hardswish_.default")
_FIXED_01 = ("sigmoid.default", "sigmoid_.default")
_OWN_RANGE = ("relu.default", "relu_.default",
              "mean.dim", "mean.default", "sub.Tensor")


def _xnnpack():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.testing.pt2e import _xnnpack_quantizer as xnnpack
    return xnnpack


def _target(node) -> str:
    """`aten.hardtanh_.default` -> `hardtanh_.default` (empty for non-aten nodes)."""
    name = str(node.target)
    return name[len("aten."):] if node.op == "call_function" and name.startswith("aten.") else ""


def _annotation(node):
    return node.meta.get("quantization_annotation")


def _set(node, inputs: dict, output=None) -> None:
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    node.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map=inputs, output_qspec=output, _annotated=True)


_RESCALE = "edgekd_rescale"  # node meta: this mul only rescales its input by a constant


def _decompose_hard_activations(model: torch.fx.GraphModule) -> None:
    """hardsigmoid(x) -> hardtanh(x + 3, 0, 6) * (1/6) and hardswish(x) -> x * hardsigmoid(x),
    in place, so that every step is an int8 ADD(RELU6) / MUL both runtimes fuse.

    Evidence (mobilenet_v3_small, 96x96): litert-torch lowers an aten hardsigmoid to ADD / MUL
    that stay float between Q/DQ; LiteRT's XNNPACK delegate does not take int8 HARD_SWISH, so
    each of the 19 splits the delegate (20 partitions); onnxruntime has no integer HardSigmoid
    or HardSwish kernel and runs them in float between DQ and Q.
    """
    aten = torch.ops.aten
    for node in list(model.graph.nodes):
        target = _target(node)
        if target not in _HARD_ACTIVATIONS:
            continue
        x = node.args[0]
        with model.graph.inserting_before(node):
            shifted = model.graph.call_function(aten.add.Tensor, (x, 3.0))
            clamped = model.graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
            sixth = model.graph.call_function(aten.mul.Tensor, (clamped, 1.0 / 6.0))
            new = [shifted, clamped, sixth]
            out = sixth
            if target.startswith("hardswish"):
                out = model.graph.call_function(aten.mul.Tensor, (x, sixth))
                new.append(out)
        for n in new:
            n.meta = {k: v for k, v in node.meta.items() if k != "quantization_annotation"}
        sixth.meta[_RESCALE] = 1.0 / 6.0
        node.replace_all_uses_with(out)
        model.graph.erase_node(node)
    model.graph.lint()
    model.recompile()


def _constants_at_rank(model: torch.fx.GraphModule) -> None:
    """Reshape the 0-d constants of add / mul (the 3 and 1/6 of hardsigmoid, any scalar) to
    [1] * rank of the result, in place.

    Evidence (mobilenet_v3_small, 96x96): litert-torch's layout pass keeps an op in NCHW
    unless every tensor input is 4-D, so each hardswish's scalar ADD / MUL ran between two
    TRANSPOSEs of the whole activation (36 TRANSPOSE, 19 RESHAPE in the int8 file). A
    [1, 1, 1, 1] constant broadcasts the same and lets the ops stay NHWC.
    """
    for node in list(model.graph.nodes):
        result = node.meta.get("val")
        if (_target(node) not in ("add.Tensor", "mul.Tensor")
                or not isinstance(result, torch.Tensor) or result.dim() < 2):
            continue
        for arg in node.args:
            value = _constant(model, arg)
            if value is not None and value.dim() == 0:
                _replace_constant(model, node, arg, value.reshape([1] * result.dim()))
    model.recompile()


_ELEMENTWISE = ("add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor")


def _input_constants_nchw(model: torch.fx.GraphModule) -> None:
    """Give the per-channel constants of the elementwise ops at the model input (the input
    normalisation) shape [C, 1, 1] instead of [1, C, 1, 1], in place.

    Evidence (mobilenet_v2, 96x96, LiteRT): with 4-D constants, litert-torch moves the input
    TRANSPOSE ahead of the normalisation, and XNNPACK's int8 SUB / MUL broadcasting a
    3-element innermost (channel) dimension cost about 150 us at 1 thread, against 6 us for
    the same ops in NCHW (fp32 has no such penalty). A 3-D constant broadcasts the same, but
    keeps those ops in NCHW, ahead of the transpose.
    """
    frontier = [n for n in model.graph.nodes if n.op == "placeholder"]
    while frontier:
        for node in list(frontier.pop().users):
            if _target(node) not in _ELEMENTWISE:
                continue
            for arg in node.args:
                value = _constant(model, arg)
                if value is not None and value.dim() == 4 and value.shape[0] == 1 \
                        and value.shape[2:] == (1, 1):
                    _replace_constant(model, node, arg, value.reshape(value.shape[1:]))
            frontier.append(node)
    model.recompile()


def attribute(model: torch.nn.Module, target: str):
    """The attribute a get_attr node's dotted `target` names (`net.0.0.weight_bias`)."""
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


def _constant(model: torch.fx.GraphModule, arg) -> torch.Tensor | None:
    if not (isinstance(arg, torch.fx.Node) and arg.op == "get_attr"):
        return None
    value = attribute(model, arg.target)
    return value if isinstance(value, torch.Tensor) else None


def _replace_constant(model: torch.fx.GraphModule, node, old, value: torch.Tensor) -> None:
    """Point `node` at a new buffer holding `value` instead of the constant `old`."""
    index = 0
    while hasattr(model, f"_edgekd_constant_{index}"):
        index += 1
    name = f"_edgekd_constant_{index}"
    model.register_buffer(name, value)
    with model.graph.inserting_before(node):
        new = model.graph.get_attr(name)
    new.meta["val"] = node.meta["val"].fake_mode.from_tensor(value, static_shapes=True)
    node.replace_input_with(old, new)
    if not old.users:
        model.graph.erase_node(old)


def _annotate_op_clamp(model: torch.fx.GraphModule, config) -> None:
    """conv[-bn]-hardtanh and add-hardtanh as one quantized op each: int8 inputs (and conv
    weight), one int8 output after the clamp, nothing in between.

    Runs before XNNPACKQuantizer's own patterns, which skip nodes already annotated.
    """
    for clamp in model.graph.nodes:
        if _target(clamp) not in _HARDTANH or _annotation(clamp):
            continue
        chain = [clamp]
        node = clamp.args[0]
        if _target(node) == "batch_norm.default" and len(node.users) == 1:
            chain.append(node)
            node = node.args[0]
        if len(node.users) != 1 or _annotation(node):
            continue
        if _target(node) == "conv2d.default":
            inputs = {node.args[0]: config.input_activation, node.args[1]: config.weight}
            if len(node.args) > 2 and isinstance(node.args[2], torch.fx.Node):
                inputs[node.args[2]] = config.bias
        elif _target(node) in ("add.Tensor", "add_.Tensor") and len(chain) == 1:
            inputs = {a: config.input_activation for a in node.args if _is_float_tensor(a)}
        else:
            continue
        _set(node, inputs)
        for mid in chain[1:]:
            _set(mid, {})
        _set(clamp, {}, config.output_activation)


def _annotate_rescale(model: torch.fx.GraphModule, config) -> None:
    """The `* 1/6` of a decomposed hard activation: its output is quantized on its input's
    grid divided by 6 (same zero point), so the int8 values pass through unchanged.

    Then the integer op is an identity: onnxruntime drops it (`edgekd.quant.onnx_qdq`), one
    pass over the tensor less for each hardswish / hardsigmoid; LiteRT still runs it. During
    QAT a derived output is not fake-quantized, which is exact here: the rescaled value lies
    on the derived grid.
    """
    from torchao.quantization.pt2e.quantizer import (
        DerivedQuantizationSpec,
        SharedQuantizationSpec,
    )

    for node in model.graph.nodes:
        factor = node.meta.get(_RESCALE)
        source = node.args[0] if factor is not None else None
        if source is None or _annotation(node) or not _annotation(source) \
                or _annotation(source).output_qspec is None:
            continue
        output = DerivedQuantizationSpec(
            derived_from=[source], derive_qparams_fn=_RescaledQParams(factor), dtype=torch.int8,
            quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)
        inputs = {source: SharedQuantizationSpec(source)}
        inputs.update({a: config.input_activation for a in node.args[1:]
                       if isinstance(a, torch.fx.Node)})
        _set(node, inputs, output)


class _RescaledQParams:
    """derive_qparams_fn: the source observer's scale times `factor`, its zero point."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, observers) -> tuple[torch.Tensor, torch.Tensor]:
        scale, zero_point = observers[0].calculate_qparams()
        return scale * self.factor, zero_point


def _fixed_01_spec():
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    return FixedQParamsQuantizationSpec(dtype=torch.int8, scale=1.0 / 256.0, zero_point=-128,
                                        quant_min=-128, quant_max=127,
                                        qscheme=torch.per_tensor_affine)


def _is_float_tensor(arg) -> bool:
    value = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dtype == torch.float32


def _annotate_rest(model: torch.fx.GraphModule, config) -> None:
    """Give every activation op XNNPACKQuantizer skipped int8 inputs and an int8 output."""
    for node in model.graph.nodes:
        target = _target(node)
        if target not in _FIXED_01 + _OWN_RANGE + _HARDTANH or _annotation(node):
            continue
        args = [a for a in node.args if _is_float_tensor(a)]
        if not args:
            continue
        inputs = {a: config.input_activation for a in args}
        output = _fixed_01_spec() if target in _FIXED_01 else config.output_activation
        _set(node, inputs, output)


def edge_quantizer(mode: Literal["qat", "ptq"] = "qat", fixes: bool = True):
    """The int8 quantizer edgekd uses: XNNPACKQuantizer (symmetric per-channel int8 weights,
    int8 activations) plus the annotations above; fake-quant for QAT (`mode="qat"`) or
    observers for post-training calibration (`mode="ptq"`). `fixes=False` is plain
    XNNPACKQuantizer, kept for comparison (bench/int8_speed.py)."""
    xnnpack = _xnnpack()
    config = xnnpack.get_symmetric_quantization_config(is_qat=mode == "qat",
                                                       is_per_channel=True)

    class EdgeQuantizer(xnnpack.XNNPACKQuantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if fixes:
                _decompose_hard_activations(model)
            model = super().transform_for_annotation(model)  # scalars -> 0-d constants
            if fixes:
                _constants_at_rank(model)
                _input_constants_nchw(model)
            return model

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if fixes:
                _annotate_op_clamp(model, config)
                _annotate_rescale(model, config)
            model = super().annotate(model)
            if fixes:
                _annotate_rest(model, config)
            return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EdgeQuantizer().set_global(config)


def qat_quantizer(fixes: bool = True):
    """The quantizer QAT trains with (edgekd.quant.qat.prepare)."""
    return edge_quantizer("qat", fixes=fixes)


def ptq_quantizer(fixes: bool = True):
    """The same annotations with min/max observers, for PT2E post-training quantization."""
    return edge_quantizer("ptq", fixes=fixes)


def litert_quantizer():
    """The quantizer litert-torch's converter is told the model was quantized with.

    litert-torch reads the Q/DQ ops already in a converted model; its own PT2EQuantizer
    config only has to describe the same scheme (symmetric per-channel int8).
    """
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
