"""Compare the logits of two runs of one model; decide pass or fail. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """How closely the emulated run's logits follow the native run's."""

    samples: int
    top1_agreement: float  # fraction of samples whose argmax is the same
    max_abs_diff: float  # largest |emulated - native| over all logits
    mean_abs_diff: float
    logit_scale: float  # largest |native logit|, to read the diffs against


def agreement(native, emulated) -> Agreement:
    """Compare two (samples x classes) logit arrays."""
    import numpy as np

    native, emulated = np.asarray(native, np.float64), np.asarray(emulated, np.float64)
    if native.shape != emulated.shape:
        raise ValueError(f"logits differ in shape: native {native.shape}, "
                         f"emulated {emulated.shape}")
    diff = np.abs(native - emulated)
    return Agreement(
        samples=int(native.shape[0]),
        top1_agreement=float((native.argmax(1) == emulated.argmax(1)).mean()),
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        logit_scale=float(np.abs(native).max()))


def verdict(result: Agreement, min_agreement: float,
            max_abs_diff: float | None) -> tuple[bool, list[str]]:
    """Pass when top-1 agreement reaches `min_agreement` and, if a limit is given, the max abs
    diff stays within it. Returns (passed, one reason per failed check)."""
    reasons = []
    if result.top1_agreement < min_agreement:
        reasons.append(f"top-1 agreement {result.top1_agreement:.4f} < {min_agreement}")
    if max_abs_diff is not None and result.max_abs_diff > max_abs_diff:
        reasons.append(f"max abs logit diff {result.max_abs_diff:.4g} > {max_abs_diff}")
    return not reasons, reasons
