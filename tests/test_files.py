"""edgekd.files: every file edgekd writes lands whole, with the mode a plain open() gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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


def test_the_run_lock_is_never_written_through_a_link(tmp_path):
    from edgekd.files import exclusive
    from edgekd.schema import ConfigError

    victim = tmp_path / "victim"
    victim.write_text("the user's own\n")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"\.lock: the run lock is a symbolic link"):
        with exclusive(tmp_path / ".lock"):
            pass
    assert victim.read_text() == "the user's own\n"
    (tmp_path / ".lock").unlink()
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(ConfigError, match="not a regular file"):
        with exclusive(tmp_path / ".lock"):
            pass
    (tmp_path / ".lock").unlink()
    with exclusive(tmp_path / ".lock"):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_a_users_file_is_read_only_when_regular_and_small(tmp_path):
    from edgekd.schema import ConfigError, read_limited

    (tmp_path / "ok.json").write_bytes(b"{}")
    assert read_limited(tmp_path / "ok.json", 2, "report.json") == b"{}"
    with pytest.raises(ConfigError, match=r"ok.json: larger than a report.json can be"):
        read_limited(tmp_path / "ok.json", 1, "report.json")
    with pytest.raises(ConfigError, match=r"^/dev/zero: is not a regular file"):
        read_limited(Path("/dev/zero"), 1 << 20, "YAML file")
    (tmp_path / "link.json").symlink_to("/dev/zero")  # through a link too
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_limited(tmp_path / "link.json", 1 << 20, "report.json")


def test_the_run_directory_of_another_pipeline_is_refused(tmp_path):
    from edgekd.files import refuse_foreign_folder
    from edgekd.schema import ConfigError

    (tmp_path / ".lock").write_text("")
    (tmp_path / "report.json").write_text('{"pipeline": "mobile"}')
    refuse_foreign_folder(tmp_path, ("report.json",), "mobile")  # the same pipeline: resume
    with pytest.raises(ConfigError, match="holds a run of pipeline 'mobile', not 'rpi'"):
        refuse_foreign_folder(tmp_path, ("report.json",), "rpi")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_folder_that_takes_no_files_says_so(tmp_path):
    from edgekd.files import check_writable
    from edgekd.schema import ConfigError

    with pytest.raises(ConfigError) as info:
        check_writable(Path("/proc"))
    assert info.value.lines == ["/proc: cannot write the run directory (--out): not writable "
                                "(this file system takes no new files)"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"file/run: cannot write the run directory"):
        check_writable(tmp_path / "file" / "run")


def test_busy_names_the_process_that_holds_the_lock_not_the_one_the_file_records(tmp_path):
    """The file kept the id of whichever run wrote it last (a refused run, a run that ended);
    the kernel knows the holder. A finished run leaves the file empty."""
    import subprocess
    import sys

    from edgekd.files import Busy, exclusive

    lock = tmp_path / ".lock"
    with exclusive(lock):
        pass
    assert lock.read_text() == ""  # nothing names a process that is gone
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock.write_text("999999")  # a stale id in the file
        with pytest.raises(Busy) as busy:
            with exclusive(lock):
                pass
        assert busy.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_reader_and_a_run_exclude_each_other(tmp_path):
    from edgekd.files import Busy, exclusive, shared

    lock = tmp_path / ".lock"
    with shared(lock):  # no lock file: a copied run directory is read unlocked
        pass
    assert not lock.exists()
    with exclusive(lock):
        with pytest.raises(Busy):  # a run holds it: no report of a run in progress
            with shared(lock):
                pass
    with shared(lock):
        with shared(lock):  # readers do not exclude each other
            pass
        with pytest.raises(Busy):  # a run started while a report is drawn is refused
            with exclusive(lock):
                pass
    lock.unlink()
    lock.symlink_to(tmp_path / "victim")
    from edgekd.schema import ConfigError
    with pytest.raises(ConfigError, match="symbolic link"):
        with shared(lock):
            pass
