"""The network families edgekd builds itself, the input adapter every model is wrapped with,
and size counts.

Defaults are chosen to survive int8: ReLU activations, BatchNorm with momentum 0.1 and eps
1e-5 (torchao's PT2E helpers reset BatchNorm to those values and its conv-BN QAT fusion
hard-codes eps 1e-5). Models from other sources are built in edgekd.models.registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights: RGB to grey, as PIL's convert("L") does."""


class InputAdapter(nn.Module):
    """Raw pixels in [0, 1] at the data's size and channels -> what the network was trained on:
    resize, channel conversion, scaling to its range and mean/std, folded into one affine map
    per channel. Part of the model, so every exported file takes raw pixels.

    `input` is a resolved input record (edgekd.models.registry.resolve_input): mean, std and
    optionally range, channels_in, channels, size_in, size, channel_order (default: [0, 1],
    as many channels as `mean`, no resize, rgb). Input N x channels_in x H x W.
    """

    def __init__(self, input: dict):
        super().__init__()
        channels = len(input["mean"])
        self.channels_in = input.get("channels_in", channels)
        self.channels = input.get("channels", channels)
        size = input.get("size")
        self.size = tuple(size) if size is not None and size != input.get("size_in") else None
        self.bgr = input.get("channel_order", "rgb") == "bgr"
        low, high = input.get("range", (0.0, 1.0))
        mean = torch.tensor(input["mean"], dtype=torch.float32)
        std = torch.tensor(input["std"], dtype=torch.float32)
        # ((x * (high - low) + low) - mean) / std  ==  (x - (mean - low) / span) / (std / span)
        span = high - low
        shift, scale = (mean - low) / span, std / span
        self.identity = bool(torch.all(shift == 0) and torch.all(scale == 1))
        self.register_buffer("mean", shift.view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / scale.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if self.channels_in == 1 and self.channels == 3:
            # Concatenation, not expand: converters lower it to a plain copy.
            x = torch.cat([x, x, x], dim=1)
        elif self.channels_in == 3 and self.channels == 1:
            x = x[:, 0:1] * LUMA[0] + x[:, 1:2] * LUMA[1] + x[:, 2:3] * LUMA[2]
        if self.bgr:
            x = torch.flip(x, dims=[1])
        if self.identity:
            return x
        return (x - self.mean) * self.inv_std


class Classifier(nn.Module):
    """The input adapter followed by the network. `net` holds the network's own modules, so
    layer paths read `net.features.0` as in the architecture. A network whose output is an
    object with `.logits` (Hugging Face) is unwrapped. `record` describes how the model was
    built (spec, input, notes) so a saved file can be rebuilt (edgekd.models.checkpoints)."""

    def __init__(self, net: nn.Module, input: dict, record: dict | None = None):
        super().__init__()
        self.normalize = InputAdapter(input)
        self.net = net
        self.record = record or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalize(x))
        return out.logits if hasattr(out, "logits") else out


def cnn(num_classes: int, in_channels: int = 1, width: int = 16, depth: int = 2) -> nn.Module:
    """A small VGG-style CNN: `depth` blocks of conv3x3-BN-ReLU (+ 2x2 max-pool while the map is
    larger than 2x2), channels `width * 2**i`, then global average pooling and a linear head."""
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(depth):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True)]
        if i < depth - 1:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        channels = out
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv and linear layers)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += out.numel() // out.shape[0] * kernel

    def linear_hook(module: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total
