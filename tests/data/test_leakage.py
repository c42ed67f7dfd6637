"""Given splits that hold samples of the training data in another .npz (edgekd.data.leakage):
a few exact duplicates load and are said with every accuracy; half or more are refused (and
the end-to-end refusal is a case of tests/test_hostile_inputs.py)."""

import numpy as np
import pytest

from edgekd.config import ConfigError, DataConfig
from edgekd.data import load


def _arrays(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).integers(0, 256, (n, 1, 6, 6), dtype=np.uint8)
    return x, np.arange(n) % 2


def _config(tmp_path, train, val, test) -> DataConfig:
    for name, (x, y) in (("train", train), ("val", val), ("test", test)):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    return DataConfig(source="npz", train=tmp_path / "train.npz", val=tmp_path / "val.npz",
                      test=tmp_path / "test.npz")


def test_a_few_training_samples_in_a_given_split_load_and_are_said(tmp_path):
    """Found by content whatever the layout: the test split stores its images channels last."""
    train, val, (test, y_test) = _arrays(0, 40), _arrays(1, 20), _arrays(2, 20)
    test[[3, 7]] = train[0][[5, 9]]
    val[0][11] = train[0][0]
    test = test.transpose(0, 2, 3, 1)
    splits = load(_config(tmp_path, train, val, (test, y_test)), seed=0)
    assert len(splits.train) == 40 and len(splits.val) == 20 and len(splits.test) == 20
    said = "of its 20 samples are identical to training samples, e.g. sample"
    assert splits.test_origin == f"given: {tmp_path / 'test.npz'} (2 {said} 3)"
    assert splits.warnings == [f"data.val: {tmp_path / 'val.npz'}: 1 {said} 11",
                               f"data.test: {tmp_path / 'test.npz'}: 2 {said} 3"]


def test_splits_apart_say_nothing(tmp_path):
    splits = load(_config(tmp_path, _arrays(0, 40), _arrays(1, 20), _arrays(2, 20)), seed=0)
    assert splits.test_origin == f"given: {tmp_path / 'test.npz'}" and splits.warnings == []


def test_half_of_a_given_split_from_the_training_data_is_refused(tmp_path):
    train, (test, y_test) = _arrays(0, 40), _arrays(2, 20)
    test[10:] = train[0][20:30]
    with pytest.raises(ConfigError, match=r"data\.test: .*test\.npz: 10 of its 20 samples are "
                                          r"identical to training samples \(data\.train, "
                                          r".*train\.npz\), e\.g\. sample 10; "):
        load(_config(tmp_path, train, _arrays(1, 20), (test, y_test)), seed=0)
