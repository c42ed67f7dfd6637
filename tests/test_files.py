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


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """POSIX: a rename reaches the disk with its folder's entry, so the folder is fsynced too,
    after the file and after the rename (else a crash may bring back the old file)."""
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd):
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        synced.append(("folder" if is_dir else "file",
                       (tmp_path / "report.json").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text(tmp_path / "report.json", "{}")
    assert synced == [("file", False), ("folder", True)]


def test_only_a_folder_without_clashing_names_or_an_edgekd_one_is_a_run_directory(tmp_path):
    from edgekd.files import refuse_foreign_folder
    from edgekd.schema import ConfigError

    writes = ("report.json", "teacher")
    refuse_foreign_folder(tmp_path / "new", writes)
    refuse_foreign_folder(tmp_path, writes)  # empty
    (tmp_path / "pipeline.yaml").write_text("the pipeline beside its run")
    refuse_foreign_folder(tmp_path, writes)  # nothing a run writes would be overwritten
    (tmp_path / "report.json").write_text("the user's own")
    with pytest.raises(ConfigError, match="not an edgekd run directory .* holds report.json"):
        refuse_foreign_folder(tmp_path, writes)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "stage.json").write_text("{}")
    refuse_foreign_folder(tmp_path, writes)  # a run's stage record: reused (resume)
    (tmp_path / "teacher" / "stage.json").unlink()
    (tmp_path / ".lock").write_text("123")
    refuse_foreign_folder(tmp_path, writes)  # every run takes the lock, even one that failed early


def test_a_path_of_the_wrong_kind_says_so():
    from pathlib import Path

    from edgekd.files import kind_problem

    here = Path(__file__)
    assert kind_problem(here, "file") is None and kind_problem(here.parent, "folder") is None
    assert kind_problem(here.parent, "file") == "is a folder, expected a file"
    assert kind_problem(here, "folder") == "is a file, expected a folder"
    assert kind_problem(here.parent / "absent", "file") == "not found"
