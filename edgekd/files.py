"""Files: the one atomic writer and the one content hash every module uses.

A reader never sees a half-written file: everything is written to a temporary name in the
same folder, then renamed over the target (rename is atomic on POSIX within one file system).
A process killed mid-write leaves at most a dot-prefixed `.NAME.PID.tmp` behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on a clean exit it is renamed to `path`.

    The temporary name keeps `path`'s suffix (writers such as np.save, torch.onnx.export and
    litert-torch look at it) and is unique to the process and call. The file is fsynced
    before the rename (its folder after it) and given the mode a plain `open()` would (0644
    under umask 022), even when the writer made it private. On an exception the temporary file
    is removed and `path` is left as it was. The parent folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if tmp.is_file():  # on disk before it takes the name: a crash never leaves half a file
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            # Some writers make their file through mkstemp (mode 0600); every artifact gets
            # the mode a plain open() would give it.
            os.chmod(tmp, 0o666 & ~_umask())
        tmp.replace(path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable: on POSIX the new name lives in the folder's entry,
    which reaches the disk only when the folder itself is fsynced (else a crash may bring
    back the old file, or none)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder (EINVAL); the rename stands
        pass
    finally:
        os.close(fd)


def check_writable(folder: Path, what: str = "the run directory (--out)",
                   create: bool = True) -> None:
    """Create `folder` if missing (with `create`; else probe the nearest folder above it that
    exists, where it would be made) and write and remove a probe file in it (never through a
    link). Raises ConfigError (exit 2) naming the folder and what is wrong (cannot be
    created, not writable: a read-only or pseudo file system such as /proc, no permission, a
    file in the way, a full disk) before anything has been done there."""
    import errno

    from edgekd.schema import ConfigError

    if not create:
        folder = folder.absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        # /proc and /sys answer "No such file or directory" to a new name in a folder that is
        # there: say what it means
        why = "not writable (this file system takes no new files)" if exc.errno == errno.ENOENT \
            and folder.is_dir() else exc.strerror or str(exc)
        raise ConfigError([f"{folder}: cannot write {what}: {why}"]) from None
    probe.unlink(missing_ok=True)


def kind_problem(path: Path, want: str) -> str | None:
    """What keeps `path` from being the `want` ("file" or "folder") a message asks for, in
    words ("not found", "is a folder, expected a file", ...); None when it is one."""
    if path.is_dir():
        return None if want == "folder" else "is a folder, expected a file"
    if path.is_file():
        return None if want == "file" else "is a file, expected a folder"
    if path.exists():
        return "is not a regular file (a FIFO, a device or a socket)"
    return "not found"


RUN_MARKERS = (".lock", "*/stage.json")
"""What marks an edgekd run directory: the lock every run takes, and the record each finished
stage writes (edgekd.pipeline)."""


def refuse_foreign_folder(folder: Path, writes: tuple[str, ...], name: str | None = None
                          ) -> None:
    """Raise ConfigError (exit 2) when `folder`, given as a run directory, is not an edgekd
    run directory (none of RUN_MARKERS) yet holds an entry named like one a run writes
    (`writes`: report.json, stage folders ...): somebody else's folder, whose files the run
    would overwrite. Also when it is the run directory of another pipeline than `name` (its
    PIPELINE_MARKER or report.json names another): that run's files would be replaced, and
    when it lies inside a run directory. A new or empty folder,
    one holding only other files (the pipeline file beside its run), or an edgekd run
    directory of the same pipeline (reused: resume) passes."""
    from edgekd.schema import ConfigError

    inside = next((p for p in folder.parents if (p / ".lock").is_file()
                   and (p / PIPELINE_MARKER).is_file()), None)
    if inside is not None:
        raise ConfigError([f"{folder}: the run directory (--out) lies inside the run directory "
                           f"{inside}; give a folder outside it"])
    if not folder.is_dir():
        return
    if any(next(folder.glob(p), None) for p in RUN_MARKERS):
        other = _marked_pipeline(folder / PIPELINE_MARKER) or \
            _report_pipeline(folder / "report.json")
        if name is not None and other is not None and other != name:
            raise ConfigError([f"{folder}: the run directory (--out) holds a run of pipeline "
                               f"{other!r}, not {name!r}: its report would be replaced; give "
                               "another --out"])
        return
    clashes = sorted(entry for entry in writes if (folder / entry).exists())
    if clashes:
        raise ConfigError([f"{folder}: the run directory (--out) is not an edgekd run directory "
                           f"(no .lock, no <stage>/stage.json) but holds {', '.join(clashes)}, "
                           "which a run would overwrite: give a new or empty folder"])


PIPELINE_MARKER = ".pipeline"
"""The file naming the pipeline a run directory belongs to, written when a run takes its lock
(a run stopped before its report still names its pipeline)."""


def mark_pipeline(folder: Path, name: str) -> None:
    """Record in run directory `folder` the pipeline it belongs to (PIPELINE_MARKER); the file
    is left as it is when it already says so."""
    if _marked_pipeline(folder / PIPELINE_MARKER) != name:
        write_text(folder / PIPELINE_MARKER, name + "\n")


def _marked_pipeline(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None \
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 1024 else None
    except (OSError, ValueError):
        return None


def _report_pipeline(path: Path) -> str | None:
    """The pipeline name a run's report.json records; None when it has none (or no report)."""
    try:
        doc = json.loads(path.read_bytes()) if path.is_file() and not path.is_symlink() \
            and path.stat().st_size <= REPORT_MAX_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    name = doc.get("pipeline") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


REPORT_MAX_BYTES = 64 << 20
"""The largest report.json edgekd reads (its own are a few hundred kB at most)."""


FULL_DISK_BYTES = 1 << 20
"""Below this much free space, a failure while writing is put down to a full disk."""


def full_disk(folder: Path, exc: BaseException | None = None) -> str | None:
    """'the disk holding FOLDER is full (N kB free)' when `exc` (or an exception it came from)
    is ENOSPC, or when the disk has less than FULL_DISK_BYTES free; else None. Writers such as
    torch.save report a full disk in their own words (`unexpected pos 14912 vs 14808`), hence
    the look at the disk itself."""
    import errno
    import shutil

    no_space = False
    while exc is not None and not no_space:
        no_space = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return f"the disk holding {folder} is full ({free / 1000:.1f} kB free)" \
        if no_space or free < FULL_DISK_BYTES else None


class Busy(Exception):
    """Another process holds the lock (`pid`: the holder the kernel names, else the one the
    file records, or None)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by process {pid}")
        self.path, self.pid = path, pid


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `path` for the block, recording this
    process's id in it while held (the file is emptied on the way out, so it never names a
    process that is gone); the kernel drops the lock when the process dies, so a killed run
    never leaves a stale lock. Raises Busy at once when another process holds it (a run, or a
    reader holding `shared`), and ConfigError when `path` is a symbolic link or not a regular
    file: the lock is written in place, so a link would have the process id written wherever
    it points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(_open_lock(path, flags), "r+") as handle:
        _flock(handle, path, fcntl.LOCK_EX)
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate(0)


@contextmanager
def shared(path: Path) -> Iterator[None]:
    """Hold a shared lock on the run lock `path` for the block, for readers of a run directory
    (`edgekd report`): raises Busy while a run holds it, and a run started meanwhile is
    refused. Writes nothing; a run directory without a lock (copied, or from before locks)
    is read unlocked."""
    if not path.exists() and not path.is_symlink():
        yield
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(_open_lock(path, flags), "r") as handle:
        _flock(handle, path, fcntl.LOCK_SH)
        yield


def _open_lock(path: Path, flags: int) -> int:
    """A descriptor of the run lock `path` opened with `flags`; ConfigError when it is a link
    or not a regular file."""
    import stat

    from edgekd.schema import ConfigError

    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise ConfigError([f"{path}: the run lock is a symbolic link (to {os.readlink(path)})"
                               "; edgekd does not write through it: remove the link"]) from None
        raise ConfigError([f"{path}: cannot open the run lock: {exc.strerror}"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError([f"{path}: the run lock is not a regular file: remove it"])
    return fd


def _flock(handle, path: Path, how: int) -> None:
    """flock(`how`) without waiting; Busy naming the holder when another process has it."""
    try:
        fcntl.flock(handle, how | fcntl.LOCK_NB)
    except BlockingIOError:
        text = handle.read(32).strip()
        raise Busy(path, lock_holder(path) or (int(text) if text.isdigit() else None)) from None


def lock_holder(path: Path) -> int | None:
    """The id of a process holding a flock on `path`, as the kernel lists it (/proc/locks:
    `1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`, device numbers in hex);
    None where /proc/locks cannot be read or names none (another OS, a network file system).
    """
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device \
                and fields[4].isdigit() and int(fields[4]) != os.getpid():
            return int(fields[4])
    return None


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_bytes(path, text.encode())


def write_json(path: Path, doc: dict) -> Path:
    """Write `doc` as indented JSON atomically; values JSON cannot hold are written as str."""
    return write_text(path, json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
