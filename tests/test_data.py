import numpy as np
import pytest

from edgekd.config import ConfigError, DataConfig
from edgekd.data import data_key, load


def test_digits_split_is_stratified_deterministic_and_disjoint():
    a, b = load(DataConfig(), seed=3), load(DataConfig(), seed=3)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.float32 and a.x_train.shape[1:] == (1, 8, 8)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    total = len(a.y_train) + len(a.y_val) + len(a.y_test)
    assert total == 1797
    assert abs(len(a.y_test) / total - 0.25) < 0.01
    # every class is present in each split in about the same proportion
    for split in (a.y_train, a.y_val, a.y_test):
        counts = np.bincount(split, minlength=10)
        assert counts.min() > 0 and counts.max() / counts.min() < 1.3
    other = load(DataConfig(), seed=4)
    assert not np.array_equal(a.y_test, other.y_test)


def test_meta_records_normalisation_from_train_split():
    splits = load(DataConfig(), seed=0)
    meta = splits.meta()
    assert meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    assert meta["mean"][0] == pytest.approx(float(splits.x_train.mean()), rel=1e-5)


def test_npz_nhwc_uint8_is_scaled_and_transposed(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 6, 5, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    splits = load(DataConfig(source="npz", path=path), seed=0)
    assert splits.x_train.shape[1:] == (3, 6, 5)
    assert splits.x_train.max() <= 1.0
    assert splits.classes == ["0", "1", "2"]


def test_npz_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 2, 2)))
    with pytest.raises(ConfigError) as info:
        load(DataConfig(source="npz", path=path), seed=0)
    assert info.value.lines == [f"{path}: .npz is missing array(s) x, y (has images)"]


def test_image_folder_resized(tmp_path):
    from PIL import Image

    for label, colour in (("cat", 30), ("dog", 220)):
        (tmp_path / label).mkdir()
        for i in range(10):
            image = Image.new("RGB", (17 + i, 11), (colour, colour, colour))
            image.save(tmp_path / label / f"{i}.png")
    cfg = DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=1)
    splits = load(cfg, seed=0)
    assert splits.classes == ["cat", "dog"]
    assert splits.x_train.shape[1:] == (1, 8, 8)
    x = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert x[y == 0].mean() < 0.2 < 0.8 < x[y == 1].mean()


def test_data_key_changes_with_file_content(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2, 2)), y=np.array([0, 1, 0, 1]))
    first = data_key(DataConfig(source="npz", path=path), 0)
    np.savez(path, x=np.ones((4, 2, 2)), y=np.array([0, 1, 0, 1]))
    assert data_key(DataConfig(source="npz", path=path), 0) != first
    assert data_key(DataConfig(), 0) != data_key(DataConfig(), 1)


def _npz(tmp_path, x, y, **extra):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, **extra)
    return path


GOOD_X = np.random.default_rng(0).random((400, 1, 4, 4), dtype=np.float32)
GOOD_Y = np.arange(400) % 4


@pytest.mark.parametrize("change, expected", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) < 3, np.nan, x), y),
     "x has 3 non-finite value(s) (NaN or inf) in 1 of 400 samples"),
    (lambda x, y: (x * 255, y), "x is float with values in ["),
    (lambda x, y: (x.astype("U3"), y), "x has dtype <U3"),
    (lambda x, y: (x, y + 0.5), "y has 400 fractional label(s), e.g. 0.5"),
    (lambda x, y: (x, np.where(y == 3, -1, y)), "y has 100 negative label(s), e.g. -1"),
    (lambda x, y: (x, np.where(y == 3, np.inf, y.astype(float))), "y has 100 non-finite"),
    (lambda x, y: (x, y.astype(str)), "y has dtype <U"),
    (lambda x, y: (x, np.zeros_like(y)), "only one class (0)"),
    (lambda x, y: (x, np.where(y == 3, 5000, y)), "labels run up to 5000 but 4997 number(s)"),
    (lambda x, y: (x[:0], y[:0]), "no samples (y is empty)"),
    (lambda x, y: (x[:12], y[:12]), "split has 0 sample(s) for 4 classes"),
])
def test_bad_arrays_are_refused_at_the_door_naming_file_and_count(tmp_path, change, expected):
    x, y = change(GOOD_X, GOOD_Y)
    path = _npz(tmp_path, x, y)
    with pytest.raises(ConfigError) as err:
        load(DataConfig(source="npz", path=path), seed=0)
    (line,) = err.value.lines
    assert line.startswith(str(path)) and expected in line, line


def test_labels_beyond_the_classes_array_are_refused(tmp_path):
    path = _npz(tmp_path, GOOD_X, GOOD_Y, classes=np.array(["a", "b", "c"]))
    with pytest.raises(ConfigError, match="y has labels up to 3 but `classes` names 3"):
        load(DataConfig(source="npz", path=path), seed=0)


def test_the_built_in_digits_are_upscaled_when_image_size_is_given():
    from edgekd.config import DataConfig
    from edgekd.data import load
    from edgekd.schema import parse

    plain = load(parse(DataConfig, {"source": "digits"}, "p.yaml"), seed=0)
    big = load(parse(DataConfig, {"source": "digits", "image_size": [24, 24]}, "p.yaml"), seed=0)
    assert plain.train.array().shape[1:] == (1, 8, 8)
    assert big.train.array().shape[1:] == (1, 24, 24)
    assert (big.y_test == plain.y_test).all()  # the same images, the same split


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_greyscale_pngs_keep_their_values(tmp_path, channels):
    """PIL's convert clips 16-bit values at 255 (every image all white); edgekd scales them."""
    from PIL import Image

    for label, level in (("dark", 30), ("light", 200)):
        (tmp_path / label).mkdir()
        for i in range(10):
            wide = np.full((12, 12), level * 257, dtype=np.uint16)
            Image.fromarray(wide).save(tmp_path / label / f"{i}.png")
    assert Image.open(tmp_path / "dark" / "0.png").mode.startswith("I")  # really 16-bit
    cfg = DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=channels)
    splits = load(cfg, seed=0)
    x = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert np.allclose(x[y == 0], 30 / 255, atol=1e-6) and np.allclose(x[y == 1], 200 / 255,
                                                                       atol=1e-6)


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("L", (40, 40)).save(tmp_path / label / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels is over twice that
    cfg = DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=1)
    with pytest.raises(ConfigError, match=r"a/\d\.png: refused, too many pixels"):
        load(cfg, seed=0).meta()  # the train statistics read the images
