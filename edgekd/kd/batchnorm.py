"""BatchNorm running statistics re-estimated after training ("precise BN").

`edgekd.kd.train.fit` calls `recalibrate` on every model with BatchNorm layers it trains
(not on QAT graphs, whose BatchNorm is folded into fake-quantized convolutions).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekd.data import Part, Splits
from edgekd.data.stream import as_input, eval_batches
from edgekd.kd.compute import CPU, Compute

BN_SAMPLES = 4096
"""Training samples a BatchNorm recalibration pass reads (all of them when fewer)."""


def layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate(model: nn.Module, splits: Splits, batch_size: int, seed: int,
                val_accuracy: float, compute: Compute = CPU) -> bool:
    """Re-estimate every BatchNorm's running mean and variance as the plain average over a
    seeded subset of up to BN_SAMPLES unaugmented training images ("precise BN", Wu & Johnson
    2021): running statistics decayed with a small momentum (torchvision's MobileNetV3 uses
    0.01) may never settle in a short run, leaving a model that learned but evaluates at
    chance. The new statistics are kept only when validation accuracy does not fall below
    `val_accuracy`; returns whether they were kept. The model ends on the CPU in eval mode."""
    norms = layers(model)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(),
              m.num_batches_tracked.clone()) for m in norms]
    rows = np.sort(np.random.default_rng(seed).permutation(len(splits.train))[:BN_SAMPLES])
    part = splits.train
    subset = Part("train", part.store, part.rows[rows], part.y[rows], f"{part.key}-bn{seed}")
    model.to(compute.device, memory_format=compute.memory_format).eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    with torch.no_grad():
        for x, _y, _i in eval_batches(subset, batch_size, pin=compute.pin_memory):
            model(as_input(x, compute.device, compute.memory_format))
    for m, (momentum, *_rest) in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()
    kept = _accuracy(model, splits.val, compute) >= val_accuracy
    if not kept:
        for m, (_momentum, mean, var, count) in zip(norms, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
    model.to("cpu", memory_format=torch.contiguous_format)
    return kept


def _accuracy(model: nn.Module, part: Part, compute: Compute) -> float:
    correct = 0
    with torch.no_grad():
        for x, y, _i in eval_batches(part, 512, pin=compute.pin_memory):
            logits = model(as_input(x, compute.device, compute.memory_format))
            correct += int((logits.argmax(1).cpu() == y).sum())
    return correct / max(len(part), 1)
