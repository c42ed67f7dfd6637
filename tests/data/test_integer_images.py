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
