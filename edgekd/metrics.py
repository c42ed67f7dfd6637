"""Classification metrics on numpy logits."""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy: logits N x classes, labels N integers; a share in [0, 1]."""
    return float((logits.argmax(1) == labels).mean())


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of samples where two models pick the same class."""
    return float((a.argmax(1) == b.argmax(1)).mean())


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute elementwise difference of two same-shape arrays, in float64."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: confidence-weighted gap between confidence and accuracy over equal-width bins."""
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)
