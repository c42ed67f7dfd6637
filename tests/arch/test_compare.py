import numpy as np
import pytest

from edgekd.arch.compare import agreement, verdict


def test_identical_logits_agree_fully():
    logits = np.random.default_rng(0).normal(size=(50, 10)).astype(np.float32)
    result = agreement(logits, logits.copy())
    assert result.top1_agreement == 1.0 and result.max_abs_diff == 0.0
    assert verdict(result, 0.99, 0.0) == (True, [])


def test_flipped_top1_counts_and_fails_the_verdict():
    native = np.eye(10, dtype=np.float32)[np.arange(100) % 10]
    emulated = native.copy()
    emulated[:5] = np.roll(emulated[:5], 1, axis=1)  # 5 of 100 change their argmax
    result = agreement(native, emulated)
    assert result.top1_agreement == pytest.approx(0.95)
    assert result.max_abs_diff == pytest.approx(1.0)
    passed, reasons = verdict(result, 0.99, None)
    assert not passed and "top-1 agreement 0.9500 < 0.99" in reasons[0]


def test_max_abs_diff_is_only_a_gate_when_asked():
    native = np.zeros((4, 3), np.float32)
    native[:, 0] = 1.0
    emulated = native + 0.25
    result = agreement(native, emulated)
    assert verdict(result, 0.99, None)[0]
    passed, reasons = verdict(result, 0.99, 0.1)
    assert not passed and reasons == ["max abs logit diff 0.25 > 0.1"]


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shape"):
        agreement(np.zeros((3, 10)), np.zeros((3, 9)))
