"""edgekd.files: every file edgekd writes lands whole, with the mode a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from edgekd.files import atomic_path, write_text


def test_a_private_temporary_file_gets_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"x")
            os.chmod(tmp, 0o600)  # as writers that go through mkstemp leave it
        assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_damaged_test_split_file_is_noticed(tmp_path):
    import numpy as np

    from edgekd.context import _damaged_zip

    path = tmp_path / "test.npz"
    np.savez(path, x=np.arange(4000, dtype=np.float32), y=np.arange(10))
    assert not _damaged_zip(path)
    whole = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    flipped = bytearray(whole)
    flipped[len(whole) // 3] ^= 0xFF  # inside x's data: its CRC no longer matches
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    assert _damaged_zip(tmp_path / "cut.npz") and _damaged_zip(tmp_path / "flip.npz")
