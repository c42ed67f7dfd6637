"""Your own networks, for pipelines/own_module.yaml (`module: my_models.py:build_student`).

A builder is a plain function returning an nn.Module that maps N x C x H x W float32 images to
N x classes logits. edgekd passes `num_classes` (the data's class count) when the function
takes it, and the pipeline's `kwargs:` as keyword arguments. The network receives what its
`input:` says it expects (default for a network trained here: the data's mean / std); edgekd
puts that conversion in front of it, so every exported file takes raw [0, 1] pixels.

Edit freely. To survive int8 well, keep to what both runtimes quantize: conv -> BatchNorm ->
ReLU / ReLU6 (QAT folds the BatchNorm into the conv), pooling, add, linear. `edgekd
check-model my_models.py:build_student` tells in seconds whether a change still exports.
"""

from torch import nn


def build_student(width: int = 16, depth: int = 3, num_classes: int = 10,
                  in_channels: int = 3) -> nn.Module:
    """A small VGG-style CNN: `depth` blocks of conv3x3-BN-ReLU, each after the first halving
    the map with a stride-2 conv and doubling the channels from `width`, then global average
    pooling and a linear classifier."""
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(depth):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )
