"""Builders: `cnn()` and torchvision architectures by name, all wrapped with the input
normalisation so every exported file takes raw pixels in [0, 1] and normalises identically.

Defaults are chosen to survive int8: ReLU activations, BatchNorm with momentum 0.1 and eps
1e-5 (torchao's PT2E helpers reset BatchNorm to those values and its conv-BN QAT fusion
hard-codes eps 1e-5).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.config import CNN_ARCHS, TORCHVISION_ARCHS, ModelConfig
from edgekd.files import atomic_path


class Normalize(nn.Module):
    """(x - mean) / std per channel; part of the model so every runtime applies it."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class Classifier(nn.Module):
    """Normalize followed by the network. `net` holds the architecture's own modules, so layer
    paths read `net.features.0` as in the architecture."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


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


def torchvision_model(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision architecture with random weights (nothing is downloaded)."""
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        # Grey inputs: repeat to three channels inside the model rather than edit its stem.
        net = nn.Sequential(_RepeatChannels(3), net)
    return net


class _RepeatChannels(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1)


def build(cfg: ModelConfig, num_classes: int, in_channels: int, mean: list[float],
          std: list[float]) -> Classifier:
    """The model a config names, wrapped with its input normalisation (random weights)."""
    if cfg.arch in CNN_ARCHS:
        net = cnn(num_classes, in_channels, width=cfg.width or 16, depth=cfg.depth or 2)
    elif cfg.arch in TORCHVISION_ARCHS:
        net = torchvision_model(cfg.arch, num_classes, in_channels)
    else:  # config validation makes this unreachable for loaded files
        raise ValueError(f"unknown architecture {cfg.arch!r}")
    return Classifier(net, mean, std)


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


def save_model(model: Classifier, cfg: ModelConfig, meta: dict, path: Path) -> None:
    """Save weights with what is needed to rebuild the model (atomically)."""
    arch = cfg.model_dump(mode="json", include={"arch", "width", "depth"})
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "config": arch, "meta": meta}, tmp)


def load_model(path: Path, cfg: ModelConfig | None = None, meta: dict | None = None) -> Classifier:
    """Load a model saved by save_model, a user's state_dict, or a fully saved model.

    A user's state_dict may be for the bare network (keys without the `net.` prefix) or for the
    wrapped Classifier; a fully saved nn.Module is wrapped with the data's normalisation.
    """
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict) and "state_dict" in blob and "config" in blob:
        cfg, meta = ModelConfig.model_validate(blob["config"]), blob["meta"]
        state = blob["state_dict"]
    elif isinstance(blob, nn.Module):
        if isinstance(blob, Classifier):
            return blob
        return Classifier(blob, meta["mean"], meta["std"])
    else:
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
        if state is None or cfg is None or meta is None:
            raise ValueError(f"{path}: not a state_dict or a saved model")
    model = build(cfg, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
    if not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
        state.update({f"normalize.{k}": v for k, v in model.normalize.state_dict().items()})
    _check_head(model, state, meta["num_classes"])
    model.load_state_dict(state)
    return model


def _check_head(model: Classifier, state: dict, num_classes: int) -> None:
    """Raise ValueError naming both class counts when the state's classifier (the model's
    last Linear layer) was trained for another number of classes."""
    heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    key = f"{heads[-1]}.weight" if heads else None
    if key in state and getattr(state[key], "ndim", 0) == 2 and len(state[key]) != num_classes:
        raise ValueError(f"its classifier ({key.removeprefix('net.')}) has "
                         f"{len(state[key])} outputs, the data has {num_classes} classes")
