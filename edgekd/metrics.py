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


REFERENCE_ACCURACIES = ("teacher_accuracy", "fp32_accuracy", "source_accuracy")
"""Accuracies a stage reports of a model another stage made (the teacher in distill, the fp32
student in quantize, each file's source model in export): that stage warns for them."""


def chance_warnings(kind: str, metrics: dict[str, float], num_classes: int) -> list[str]:
    """A warning for each test accuracy of a model the stage trained or wrote (`accuracy`,
    `<artifact>.accuracy`, `kd_accuracy`, `baseline_accuracy`, `<model>_accuracy`; not the
    validation accuracies, nor REFERENCE_ACCURACIES) at chance level: below
    min(1.5/K, 1/K + 0.05) for K classes (0.55 for 2, 0.15 for 10, 0.015 for 100)."""
    chance = 1.0 / num_classes
    limit = min(1.5 * chance, chance + 0.05)
    return [f"{kind}: {key} {value:.3f} is at chance level ({chance:.3f} for {num_classes} "
            "classes): the model guesses. Likely causes: BatchNorm running statistics that "
            "never settled (more epochs, or a higher BatchNorm momentum), a learning rate far "
            "off, inputs normalised unlike in training, or a teacher that knows nothing"
            for key, value in metrics.items() if _own_accuracy(key) and value < limit]


def _own_accuracy(key: str) -> bool:
    """`key` is a test accuracy of a model its stage made (see chance_warnings)."""
    last = key.rsplit(".", 1)[-1]
    return (last == "accuracy" or last.endswith("_accuracy")) \
        and not last.endswith("val_accuracy") and last not in REFERENCE_ACCURACIES
