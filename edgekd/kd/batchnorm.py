"""BatchNorm running statistics re-estimated before validation ("precise BN").

`edgekd.kd.train.fit` validates every model with BatchNorm layers it trains (not QAT graphs,
whose BatchNorm is folded into fake-quantized convolutions) through `shipped`: once with the
running statistics training left, once with statistics re-estimated over a fixed, seeded
subset of unaugmented training images. The better of the two is the epoch's accuracy, and the
statistics that gave it are the ones a kept epoch ships with; training then goes on from its
own statistics, so the weights it reaches (and a resumed run) do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from edgekd.data import Part
from edgekd.data.stream import as_input, eval_batches
from edgekd.kd.compute import CPU, Compute

BN_SAMPLES = 1024
"""Training samples a BatchNorm re-estimation pass reads (all of them when fewer). Each image
gives H x W values per channel, so a thousand settle the statistics: on the MNIST cnn student,
test accuracy after passes over 512 to 8,000 images differed by at most 0.25 pt (noise)."""


def layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def sample_batches(train: Part, seed: int, compute: Compute = CPU, batch_size: int = 512):
    """A reusable loader over the seeded subset of up to BN_SAMPLES training samples that
    every re-estimation pass of a run reads (in order, unaugmented), in batches as large as
    validation's (faster, and each batch's statistics nearer the population's)."""
    rows = np.sort(np.random.default_rng(seed).permutation(len(train))[:BN_SAMPLES])
    subset = Part("train", train.store, train.rows[rows], train.y[rows], f"{train.key}-bn{seed}",
                  train.num_workers)
    return eval_batches(subset, batch_size, pin=compute.pin_memory, persistent=True)


def recalibrate(model: nn.Module, batches, compute: Compute = CPU) -> None:
    """Re-estimate every BatchNorm's running mean and variance, in place, as the plain average
    over `batches` (sample_batches; Wu & Johnson 2021): statistics decayed with a small
    momentum (torchvision's MobileNetV3 uses 0.01) may never settle in a short run, leaving a
    model that learned but evaluates at chance. The model ends in eval mode."""
    norms = layers(model)
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    with torch.no_grad():
        for x, _y, _i in batches:
            model(as_input(x, compute.device, compute.memory_format))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


@contextmanager
def shipped(model: nn.Module, batches, accuracy: Callable[[], float],
            compute: Compute = CPU) -> Iterator[tuple[float, bool]]:
    """Yield (accuracy, recalibrated): the better of `accuracy()` with the model's running
    statistics and with statistics re-estimated over `batches` (a tie goes to the re-estimated
    ones). Inside the block the model holds the statistics that gave it (take a snapshot
    there); on leaving it, the statistics training had are back."""
    norms = layers(model)
    saved = [tuple(t.clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked))
             for m in norms]
    try:
        before = accuracy()
        recalibrate(model, batches, compute)
        after = accuracy()
        if after < before:
            _load(norms, saved)
        yield max(before, after), after >= before
    finally:
        _load(norms, saved)


def _load(norms: list[nn.modules.batchnorm._BatchNorm], saved: list[tuple]) -> None:
    for m, (mean, var, count) in zip(norms, saved, strict=True):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)
