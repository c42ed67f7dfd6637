"""What edgekd.data.checks accepts and how: the inputs it handles (not refuses) are read as the
user meant them. Refusals are cases of tests/test_hostile_inputs.py."""

import os
import re

import numpy as np
import pytest

from edgekd.config import ConfigError, DataConfig
from edgekd.data import data_key, load
from edgekd.data.checks import model_input_problem


def _npz(tmp_path, x, n_classes=3):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(len(x)) % n_classes)
    return load(DataConfig(source="npz", path=path), seed=0)


def _all(splits):
    parts = (splits.train, splits.val, splits.test)
    rows = np.concatenate([p.rows for p in parts])
    return rows, np.concatenate([p.inputs(np.arange(len(p))) for p in parts])


def test_rgba_channels_last_is_four_channels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (60, 8, 6, 4), dtype=np.uint8)
    splits = _npz(tmp_path, x)
    assert splits.input_shape == (4, 8, 6)
    rows, got = _all(splits)
    assert np.allclose(got, x[rows].transpose(0, 3, 1, 2) / 255.0)


@pytest.mark.parametrize("dtype, top, scale", [(np.uint16, 65535, 65535.0),
                                               (np.int64, 255, 255.0),
                                               (np.int32, 200, 255.0)])
def test_integer_pixels_are_scaled_by_their_range(tmp_path, dtype, top, scale):
    x = np.random.default_rng(0).integers(0, top + 1, (60, 1, 5, 5)).astype(dtype)
    x[0, 0, 0, 0] = top
    rows, got = _all(_npz(tmp_path, x))
    assert got.max() <= 1.0 and np.allclose(got, x[rows] / scale)


def test_exif_orientation_is_applied_when_decoding(tmp_path):
    """A camera's portrait photo: stored 16 wide x 8 high with the top row bright, EXIF
    orientation 6 (turn 90 degrees clockwise to view): seen 8 wide x 16 high, bright on the
    right. Read at that size, the right column is bright and the left one dark."""
    from PIL import Image

    stored = np.zeros((8, 16), np.uint8)
    stored[:3] = 255
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(stored).save(tmp_path / c / f"{i}.jpg", quality=95, exif=exif)
    splits = load(DataConfig(source="folder", path=tmp_path, image_size=(16, 8), channels=1),
                  seed=0)
    _rows, x = _all(splits)
    assert (x[:, 0, :, -1] > 0.8).all() and (x[:, 0, :, 0] < 0.2).all()


def _folder(root, classes=("a", "b"), per_class=4):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), i * 40).save(root / c / f"{i}.png")


def test_data_key_covers_a_symlinked_class_folder(tmp_path):
    _folder(tmp_path / "imgs")
    _folder(tmp_path / "elsewhere", classes=("c",))
    (tmp_path / "imgs" / "c").symlink_to(tmp_path / "elsewhere" / "c", target_is_directory=True)
    cfg = DataConfig(source="folder", path=tmp_path / "imgs", image_size=(8, 8), channels=1)
    first = data_key(cfg, 0)
    (tmp_path / "elsewhere" / "c" / "0.png").write_bytes(
        (tmp_path / "elsewhere" / "c" / "1.png").read_bytes() + b"\0")
    assert data_key(cfg, 0) != first


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    _folder(tmp_path / "imgs")
    os.rename(tmp_path / "imgs" / "a" / "0.png",
              os.path.join(os.fsencode(tmp_path / "imgs" / "a"), b"\xe9t\xe9.png"))
    cfg = DataConfig(source="folder", path=tmp_path / "imgs", image_size=(8, 8), channels=1)
    assert data_key(cfg, 0) == data_key(cfg, 0)
    splits = load(cfg, seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8


def test_every_image_is_checked_at_load_not_only_the_sampled_ones(tmp_path):
    _folder(tmp_path / "imgs", per_class=30)
    damaged = tmp_path / "imgs" / "b" / "17.png"
    damaged.write_bytes(damaged.read_bytes()[:-20])  # cut inside its last chunks
    cfg = DataConfig(source="folder", path=tmp_path / "imgs", image_size=(8, 8), channels=1,
                     stats_samples=1)
    with pytest.raises(ConfigError, match=r"imgs/b/17\.png: cannot read as an image"):
        load(cfg, seed=0)


def test_manifest_rows_may_lead_out_of_its_folder_or_be_absolute(tmp_path):
    """A manifest in lists/ naming ../imgs/... (the common layout) and absolute paths loads."""
    _folder(tmp_path / "imgs")
    (tmp_path / "lists").mkdir()
    rows = [f"../imgs/{c}/{i}.png,{c}" for c in "ab" for i in range(4) if (c, i) != ("a", 0)]
    path = tmp_path / "lists" / "m.csv"
    path.write_text("path,label\n" + "\n".join(rows + [f"{tmp_path}/imgs/a/0.png,a"]) + "\n")
    splits = load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8


def test_manifest_listing_a_dangling_link_names_it(tmp_path):
    _folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "a" / "9.png").symlink_to(tmp_path / "gone.png")
    rows = [f"imgs/{c}/{i}.png,{c}" for c in "ab" for i in range(4)] + ["imgs/a/9.png,a"]
    path = tmp_path / "m.csv"
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"imgs/a/9\.png: a symlink to .*gone\.png, which "
                                          "does not exist"):
        load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)


@pytest.mark.parametrize("x, expected", [
    (np.full((4, 1, 8, 8), 0.5, np.float32), None),
    (np.full((4, 1, 8, 8), 128, np.uint8), "x is uint8; the model takes float32"),
    (np.full((4, 1, 8, 8), 128.0, np.float32), "x is float with values in [128, 128]"),
    (np.full((4, 1, 8, 8), np.nan, np.float32), "x has 256 non-finite value(s)"),
])
def test_profile_data_must_be_what_the_model_takes(tmp_path, x, expected):
    path = tmp_path / "t.npz"
    np.savez(path, x=x, y=np.zeros(4, np.int64))
    problem = model_input_problem(path)
    assert problem == expected if expected is None else expected in problem, problem


def test_manifest_labels_that_only_look_numeric_sort_as_text(tmp_path):
    """"--5" and "²" passed str.isdigit and then crashed int() (exit 1)."""
    _folder(tmp_path / "imgs")
    rows = [f"imgs/a/{i}.png,--5" for i in range(4)] + [f"imgs/b/{i}.png,²" for i in range(4)]
    path = tmp_path / "m.csv"
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    splits = load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert splits.classes == ["--5", "²"]


def test_a_class_folder_named_with_control_characters_is_refused(tmp_path):
    _folder(tmp_path / "imgs", classes=("a", "b\x1b[2J"))
    with pytest.raises(ConfigError, match=r"imgs/b\\x1b\[2J: a class folder whose name is not "
                                          "printable"):
        load(DataConfig(source="folder", path=tmp_path / "imgs", image_size=(8, 8)), seed=0)


def test_a_dangling_class_folder_link_is_refused_not_skipped(tmp_path):
    _folder(tmp_path / "imgs", classes=("a", "b", "c"))
    (tmp_path / "imgs" / "d").symlink_to(tmp_path / "unmounted" / "d")
    with pytest.raises(ConfigError, match=r"imgs/d: a symlink to .*unmounted/d, which does not"):
        load(DataConfig(source="folder", path=tmp_path / "imgs", image_size=(8, 8)), seed=0)


@pytest.mark.parametrize("top", [1.0, 255.0])
def test_float_tiffs_in_0_1_or_0_255_read_as_their_pixels(tmp_path, top):
    """32-bit float images (PIL mode F): [0, 1] is scaled to 0-255, [0, 255] kept (PIL's own
    convert("L") made [0, 1] all black)."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8)).astype(np.float32)
    for c, images in zip("ab", pixels, strict=True):
        (tmp_path / c).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image * top / 255.0).save(tmp_path / c / f"{i}.tif")
    splits = load(DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=1),
                  seed=0)
    part = splits.train
    want = pixels[part.y, [int(f.stem) for f in np.array(part.store.files)[part.rows]]]
    assert np.abs(part.read(np.arange(len(part)))[:, 0].astype(int) - want).max() <= 1


def test_jsonl_labels_may_be_strings_or_integers(tmp_path):
    _folder(tmp_path / "imgs")
    path = tmp_path / "m.jsonl"
    path.write_text("".join(f'{{"path": "imgs/{c}/{i}.png", "label": {label}}}\n'
                            for c, label in (("a", 7), ("b", '"b"')) for i in range(4)))
    splits = load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)
    assert splits.classes == ["7", "b"]


@pytest.mark.parametrize("label", ["{}", "true", "1.5", "null", '""'])
def test_a_jsonl_label_that_is_not_a_string_or_integer_names_the_line(tmp_path, label):
    _folder(tmp_path / "imgs")
    path = tmp_path / "m.jsonl"
    rows = [f'{{"path": "imgs/{c}/{i}.png", "label": "{c}"}}' for c in "ab" for i in range(4)]
    rows[5] = f'{{"path": "imgs/b/1.png", "label": {label}}}'
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=rf"m\.jsonl:6: .* label {re.escape(label)}\)"):
        load(DataConfig(source="manifest", path=path, image_size=(8, 8)), seed=0)


def test_npz_labels_far_beyond_the_sample_count_are_refused_before_naming_classes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((40, 1, 4, 4), np.float32), y=np.array([0, 10**12] * 20))
    with pytest.raises(ConfigError, match=r"d\.npz: labels run up to 1000000000000 but "
                                          r"999999999999 number\(s\) .* \(y has 40 samples\)"):
        load(DataConfig(source="npz", path=path), seed=0)


def test_given_splits_apart_load_and_a_link_from_outside_is_not_a_duplicate(tmp_path):
    """Disjoint train / test folders load; an image linked in from outside the dataset is one
    image, not a repeat; the same image reached through a link from two splits is refused."""
    _folder(tmp_path / "train")
    _folder(tmp_path / "test")
    _folder(tmp_path / "outside")
    (tmp_path / "train" / "a" / "linked.png").symlink_to(tmp_path / "outside" / "a" / "0.png")
    cfg = DataConfig(source="folder", train=tmp_path / "train", test=tmp_path / "test",
                     image_size=(8, 8))
    splits = load(cfg, seed=0)
    assert len(splits.train) + len(splits.val) == 9 and len(splits.test) == 8
    (tmp_path / "test" / "b" / "linked.png").symlink_to(tmp_path / "train" / "b" / "1.png")
    with pytest.raises(ConfigError, match=r"data\.test: .*test: 1 of its \d+ image\(s\) are "
                                          r"also in data\.train .*e\.g\. .*b/linked\.png"):
        load(cfg, seed=0)
    (tmp_path / "test" / "b" / "linked.png").unlink()
    import os

    os.link(tmp_path / "train" / "a" / "2.png", tmp_path / "test" / "a" / "hard.png")
    with pytest.raises(ConfigError, match=r"1 of its \d+ image\(s\) are also in data\.train "
                                          r".*e\.g\. .*a/hard\.png"):  # a hard link too
        load(cfg, seed=0)


def test_an_npz_x_member_that_is_not_npy_names_it(tmp_path):
    import zipfile

    np.savez(tmp_path / "y.npz", y=np.arange(20) % 2)
    with zipfile.ZipFile(tmp_path / "y.npz") as src, \
            zipfile.ZipFile(tmp_path / "d.npz", "w") as dst:
        dst.writestr("x.npy", b"not an array")
        dst.writestr("y.npy", src.read("y.npy"))
    with pytest.raises(ConfigError, match=r"d\.npz: member x is not a \.npy array"):
        load(DataConfig(source="npz", path=tmp_path / "d.npz"), seed=0)
