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
