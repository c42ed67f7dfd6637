"""Integer image files wider than 8 bits (PIL modes I;16 and I: 16-bit PNG, 32-bit TIFF) are
read as 16-bit, 65535 -> 255; a 32-bit one beyond 0-65535 is refused (a case of
tests/test_hostile_inputs.py), not clipped to white."""

import numpy as np

from edgekd.config import DataConfig
from edgekd.data import load


def test_32_bit_integer_images_in_0_65535_read_as_16_bit(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 65536, (2, 4, 8, 8)).astype(np.int32)
    pixels[0, 0, 0, 0] = 65535
    for c, images in zip("ab", pixels, strict=True):
        (tmp_path / c).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / c / f"{i}.tif")
            with Image.open(tmp_path / c / f"{i}.tif") as img:
                assert img.mode == "I"
    splits = load(DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=1),
                  seed=0)
    parts = (splits.train, splits.val, splits.test)
    got = np.concatenate([p.read(np.arange(len(p)))[:, 0].astype(int) for p in parts])
    files = np.concatenate([np.array(p.store.files)[p.rows] for p in parts])
    want = np.stack([pixels["ab".index(f.parent.name), int(f.stem)] for f in files]) / 257
    assert np.abs(got - want).max() <= 0.5 + 1e-6


def test_8_bit_values_in_a_16_bit_png_are_refused_not_read_as_black(tmp_path):
    """Grey levels 60 and 90 saved as 16-bit PNGs became 0s and 1s (1/257): both classes
    black, a model at chance, exit 0. An all-black 16-bit image is still an image."""
    import pytest
    from PIL import Image

    from edgekd.config import ConfigError

    for c, level in (("a", 60), ("b", 90)):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8), level, np.uint16)).save(tmp_path / c / f"{i}.png")
    with Image.open(tmp_path / "a" / "0.png") as img:
        assert img.mode.startswith("I")
    config = DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=1)
    with pytest.raises(ConfigError, match=r"a/\d\.png: a 16-bit image whose values never "
                                          r"exceed 255 \(they are in \[60, 60\]\)"):
        load(config, seed=0)
    for c, scale in (("a", 257), ("b", 0)):  # 16-bit data, and black frames, load
        for i in range(6):
            Image.fromarray(np.full((8, 8), 60 * scale, np.uint16)).save(tmp_path / c / f"{i}.png")
    load(config, seed=0)
