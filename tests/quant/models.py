"""Tiny models for the quant tests, and one built to make int8 slower than fp32."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Residual(nn.Module):
    """conv-relu, then a residual add whose input also feeds the next conv: the shape that
    left convs and adds in float on onnxruntime (one Q feeding two DQs)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        return self.head(x.mean((2, 3)))


class HardSwishSE(nn.Module):
    """mobilenet_v3's pieces: conv-hardswish and a squeeze-excite gate (mean, 1x1 convs,
    hardsigmoid, multiply), whose scalar adds / muls litert-torch kept in NCHW."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.squeeze = nn.Conv2d(channels, 4, 1)
        self.excite = nn.Conv2d(4, channels, 1)
        self.out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardswish(self.stem(x))
        gate = torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))
        x = x * nn.functional.hardsigmoid(self.excite(gate))
        x = nn.functional.hardswish(self.out(x))
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)


class SlowInt8(nn.Module):
    """int8 slower than fp32 by construction: trivial 1x1 convs on a wide map, each followed
    by tanh, which no int8 kernel covers. Quantized, every tanh runs in float between a
    DequantizeLinear and a QuantizeLinear: two extra passes over the map per layer, for
    convolutions too small to win anything back."""

    def __init__(self, layers: int = 8, channels: int = 4, activation=torch.tanh):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(layers))
        self.stem = nn.Conv2d(3, channels, 1)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.convs:
            x = self.activation(conv(x))
        return x.mean((2, 3))


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    model.eval()
    torch.onnx.export(model, (torch.rand(1, *shape),), str(path), dynamo=True,
                      external_data=False, opset_version=18, verbose=False)
    return path
