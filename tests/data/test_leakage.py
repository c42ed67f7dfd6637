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


@pytest.mark.parametrize("stored", ["uint16", "float32", "int32"])
def test_training_samples_stored_in_another_pixel_type_are_found(tmp_path, stored):
    """The same 8-bit images as uint16 (x 257), float32 in [0, 1] or int32 passed as new."""
    train, (test, y_test) = _arrays(0, 40), _arrays(2, 20)
    test[:] = train[0][:20]
    test = {"uint16": test.astype(np.uint16) * 257, "float32": (test / 255).astype(np.float32),
            "int32": test.astype(np.int32)}[stored]
    with pytest.raises(ConfigError, match=r"data\.test: .*20 of its 20 samples are identical"):
        load(_config(tmp_path, train, _arrays(1, 20), (test, y_test)), seed=0)


def test_a_dataset_that_repeats_its_samples_is_refused_or_said_when_held_out(tmp_path):
    """One .npz holding every sample twice: edgekd's own held-out split was mostly copies of
    training samples (teacher 0.82 against 0.62 on clean data), and nothing said so."""
    x, y = _arrays(0, 40)
    np.savez(tmp_path / "twice.npz", x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    with pytest.raises(ConfigError, match=r"data\.path: .*twice\.npz: \d+ of the \d+ samples "
                                          r"held out for (val|test) are identical"):
        load(DataConfig(source="npz", path=tmp_path / "twice.npz"), seed=0)
    x2, y2 = _arrays(3, 400)
    x2[300:] = x2[:100]  # a quarter repeats: the held-out splits hold some, not half
    np.savez(tmp_path / "some.npz", x=x2, y=y2)
    splits = load(DataConfig(source="npz", path=tmp_path / "some.npz"), seed=0)
    assert splits.warnings and all(
        w.startswith(f"data.path: {tmp_path / 'some.npz'}: ") and "identical to training" in w
        for w in splits.warnings)
    assert "identical to training samples" in splits.test_origin
