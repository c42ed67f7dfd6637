"""Augmentation presets and batch mixing, from torchvision.transforms.v2.

Per-sample transforms run where the sample is read (a DataLoader worker), each sample seeded
by (seed, epoch, index): the same pipeline and seed augment every image the same way, with any
number of workers and after a resume. Batch mixing (MixUp, CutMix) and label smoothing run on
the training device, seeded by (seed, epoch, step), and turn labels into class probabilities.
"""

from __future__ import annotations

import torch

from edgekd.config.data import Augment


def sample_transform(cfg: Augment, shape: tuple[int, int, int]):
    """The per-sample transform of `cfg.preset` for C x H x W images, or None for `none`.

    light: RandomCrop(H x W, padding max(H, W) // 8, zero fill) + RandomHorizontalFlip;
    standard: RandomResizedCrop(H x W, scale 0.08-1, antialiased) + RandomHorizontalFlip."""
    from torchvision.transforms import v2

    size = tuple(shape[1:])
    if cfg.preset == "light":
        return v2.Compose([v2.RandomCrop(size, padding=max(1, max(size) // 8)),
                           v2.RandomHorizontalFlip()])
    if cfg.preset == "standard":
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True),
                           v2.RandomHorizontalFlip()])
    return None


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch (fits torch.manual_seed)."""
    return (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % 2**63


class BatchMix:
    """MixUp / CutMix and label smoothing for a batch on the device: `(x, y, epoch, step) ->
    (x, targets)` with targets (N, classes) probabilities, or y unchanged when `cfg` mixes
    nothing and smooths nothing. With both mixup and cutmix, one is chosen per batch."""

    def __init__(self, cfg: Augment, num_classes: int, seed: int):
        from torchvision.transforms import v2

        self.cfg, self.num_classes, self.seed = cfg, num_classes, seed
        mixers = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) \
            + ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
        self.mix = None if not mixers else mixers[0] if len(mixers) == 1 else \
            v2.RandomChoice(mixers)

    @property
    def active(self) -> bool:
        return self.mix is not None or self.cfg.label_smoothing > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int,
                 step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return x, y
        eps = self.cfg.label_smoothing
        if self.mix is None:
            targets = torch.nn.functional.one_hot(y, self.num_classes).float()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, step) ^ 0x5EED)
                x, targets = self.mix(x, y)
        return x, targets * (1 - eps) + eps / self.num_classes
