"""A cached arm64 Debian root with Python and the arm64 wheels of the runtimes, and a way to
run a Python script in it under qemu user-mode emulation.

The root is prepared once (debootstrap's first stage, the Python debs unpacked, the aarch64
wheels unpacked on a site directory) under `$XDG_CACHE_HOME/edgekd/arm64-root` and reused; a
change of the pinned versions below prepares a fresh one.

Two things about qemu-user that decide how a run is set up (docker/README.md has the evidence):
- qemu 7.2 (Debian bookworm) shows the guest the host's x86 /proc/cpuinfo. The pytorch/cpuinfo
  library inside onnxruntime 1.32 and ai-edge-litert >= 2.2 then dereferences NULL while
  creating a session / interpreter. Each run therefore gets a view of the root with an ARM
  /proc/cpuinfo for the emulated core (qemu looks paths up in its -L prefix first).
- qemu 7.2's default CPU (`max`) has SME, and XNNPACK's SME kernels give wrong int8 results
  under its emulation (qemu 10 gives the right ones). Runs name a real core instead
  (cortex-a72 by default, the Raspberry Pi 4's), which is also what the devices have.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


class SetupError(Exception):
    """This host lacks a tool the emulated run needs; the message says what to install."""


class PrepareError(Exception):
    """Preparing the arm64 root failed (network, mirror, pip); the message says where."""


@dataclass(frozen=True)
class Arch:
    """One emulated architecture."""

    debian: str  # Debian's name for it (debootstrap --arch)
    qemu: str  # the qemu user-mode binary that runs its programs
    wheel_machine: str  # machine part of its manylinux wheel tags
    cpus: dict[str, tuple[str, str]]  # QEMU_CPU model -> (MIDR part number, what has it)


ARCHES = {
    "arm64": Arch(
        debian="arm64", qemu="qemu-aarch64-static", wheel_machine="aarch64",
        cpus={"cortex-a72": ("0xd08", "Raspberry Pi 4"),
              "cortex-a76": ("0xd0b", "Raspberry Pi 5"),
              "cortex-a53": ("0xd03", "Raspberry Pi 3 / Zero 2 W"),
              "neoverse-n1": ("0xd0c", "Graviton 2, Ampere Altra")}),
}
DEFAULT_CPU = "cortex-a72"

SUITE = "bookworm"  # Raspberry Pi OS 12 is bookworm; glibc 2.36
GLIBC_MINOR = 36
PYTHON = "3.11"
DEBS = ("python3.11-minimal", "libpython3.11-stdlib")
# The same versions as constraints.txt (a test checks), so the emulated run differs from the
# native one only in the architecture.
WHEELS = ("numpy==2.4.6", "onnxruntime==1.32.0", "ai-edge-litert==2.3.0")
MIRROR = "http://deb.debian.org/debian"
# What a run's view of the root takes from it; host paths (/tmp, /home, the model) stay visible.
VIEW_ENTRIES = ("bin", "etc", "lib", "sbin", "usr")


@dataclass(frozen=True)
class Root:
    """A prepared root: `sysroot` holds Debian and Python, `site` the unpacked wheels."""

    path: Path
    arch: str
    info: dict

    @property
    def sysroot(self) -> Path:
        return self.path / "sysroot"

    @property
    def site(self) -> Path:
        return self.path / "site"


def cache_dir() -> Path:
    """edgekd's cache directory: $XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd"


def spec(arch: str) -> dict:
    """Everything that decides a root's contents; its hash names a valid cached root."""
    mirror = os.environ.get("EDGEKD_DEBIAN_MIRROR", MIRROR)
    return {"arch": arch, "suite": SUITE, "mirror": mirror, "debs": list(DEBS),
            "python": PYTHON, "wheels": list(WHEELS)}


def spec_key(arch: str) -> str:
    return hashlib.sha256(json.dumps(spec(arch), sort_keys=True).encode()).hexdigest()[:16]


def missing_tools(arch: str) -> list[str]:
    """The host tools that are missing, each with the Debian package that provides it."""
    wanted = {ARCHES[arch].qemu: "qemu-user-static", "debootstrap": "debootstrap",
              "dpkg-deb": "dpkg", "tar": "tar"}
    if os.geteuid() != 0:
        wanted["fakeroot"] = "fakeroot"  # debootstrap refuses to run as a plain user
    return [f"{tool} (Debian package {package})" for tool, package in wanted.items()
            if shutil.which(tool) is None]


def ensure(arch: str, log: Callable[[str], None] = lambda _: None) -> Root:
    """The prepared root for `arch`, preparing it first if there is none (about a minute)."""
    missing = missing_tools(arch)
    if missing:
        raise SetupError(f"validate-arch needs {', '.join(missing)}; on Debian/Ubuntu: "
                         "sudo apt-get install qemu-user-static debootstrap fakeroot")
    final = cache_dir() / f"{arch}-root"
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.with_name(f"{arch}-root.lock")):
        info = _read_info(final)
        if info.get("key") == spec_key(arch):
            return Root(final, arch, info)
        log(f"preparing the {arch} root in {final} (once; about a minute)")
        work = Path(tempfile.mkdtemp(prefix=f"{arch}-root.", dir=final.parent))
        try:
            info = _prepare(arch, work)
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"prepared the {arch} root in {info['seconds']:.0f} s")
        return Root(final, arch, info)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise preparation between processes (two test workers, two terminals)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_info(root: Path) -> dict:
    try:
        return json.loads((root / "root.json").read_text())
    except (OSError, ValueError):
        return {}


def _prepare(arch: str, work: Path) -> dict:
    start = time.monotonic()
    _debootstrap(arch, work / "sysroot")
    _unpack_debs(work / "sysroot")
    versions = _unpack_wheels(arch, work / "wheels", work / "site")
    shutil.rmtree(work / "wheels")
    info = {"key": spec_key(arch), **spec(arch), "installed": versions,
            "qemu": qemu_version(arch), "seconds": round(time.monotonic() - start, 1)}
    # The smoke test runs in the finished layout, so a root that cannot import its runtimes is
    # never marked ready.
    check = run_python(Root(work, arch, info), ["-c", "import numpy, onnxruntime, "
                                                "ai_edge_litert.interpreter"], DEFAULT_CPU, 600)
    if check.returncode != 0:
        raise PrepareError(f"the {arch} root cannot import its runtimes: "
                           f"{_tail(check.stderr)}")
    info["seconds"] = round(time.monotonic() - start, 1)
    (work / "root.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _debootstrap(arch: str, sysroot: Path) -> None:
    """debootstrap's first stage only: it unpacks the essential packages and downloads the
    rest; the second stage (running maintainer scripts) is not needed to run Python."""
    mirror = os.environ.get("EDGEKD_DEBIAN_MIRROR", MIRROR)
    argv = ["debootstrap", f"--arch={ARCHES[arch].debian}", "--foreign", "--variant=minbase",
            f"--include={','.join(DEBS)}", SUITE, str(sysroot), mirror]
    if os.geteuid() != 0:
        argv = ["fakeroot", *argv]
    _check(argv, "debootstrap")


def _unpack_debs(sysroot: Path) -> None:
    """Unpack every downloaded deb (Python and its libraries among them) into the root.

    `tar --keep-directory-symlink` keeps bookworm's merged-/usr links (lib -> usr/lib);
    `dpkg-deb -x` would replace them with directories and lose the dynamic loader.
    """
    archives = sysroot / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        payload = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                   stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(sysroot)],
                               stdin=payload.stdout, capture_output=True, text=True)
        payload.stdout.close()
        if payload.wait() != 0 or untar.returncode != 0:
            raise PrepareError(f"cannot unpack {deb.name}: {_tail(untar.stderr)}")
        deb.unlink()
    if not (sysroot / "usr" / "bin" / f"python{PYTHON}").exists():
        raise PrepareError(f"debootstrap did not fetch python{PYTHON} into {sysroot}")


def wheel_platforms(machine: str, glibc_minor: int = GLIBC_MINOR) -> list[str]:
    """Every manylinux tag a glibc 2.`glibc_minor` system accepts.

    pip expands `manylinux2014_*` to older tags only, and ai-edge-litert 2.x (manylinux_2_27),
    onnxruntime 1.32 (manylinux_2_28) and numpy 2.4 are tagged newer than that, so each tag
    is named.
    """
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 16, -1)] + \
        [f"manylinux2014_{machine}"]


def _unpack_wheels(arch: str, wheels: Path, site: Path) -> dict[str, str]:
    platforms = [arg for tag in wheel_platforms(ARCHES[arch].wheel_machine)
                 for arg in ("--platform", tag)]
    _check([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
            ":all:", "--python-version", PYTHON, "--implementation", "cp", *platforms,
            "--dest", str(wheels), *WHEELS], "pip download")
    versions = {}
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
            for member in archive.infolist():  # zipfile drops the execute bits
                mode = member.external_attr >> 16
                if mode & 0o111:
                    (site / member.filename).chmod(mode & 0o777)
        name, version = wheel.name.split("-")[:2]
        versions[name] = version
    return versions


def qemu_version(arch: str) -> str:
    out = subprocess.run([ARCHES[arch].qemu, "--version"], capture_output=True, text=True)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.split("version")[-1].strip() or "unknown"


def cpuinfo(arch: str, cpu: str, processors: list[int]) -> str:
    """An ARM /proc/cpuinfo for `processors` of the emulated core (what a Pi's kernel prints)."""
    part, _ = ARCHES[arch].cpus[cpu]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
             f"CPU part\t: {part}\nCPU revision\t: 0\n\n")
    return "".join(block.format(i=i) for i in processors)


def host_processors() -> list[int]:
    """The host's present CPUs: the guest sees the host's /sys, so the counts must agree."""
    try:
        text = Path("/sys/devices/system/cpu/present").read_text().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    found: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        found += range(int(low), int(high or low) + 1)
    return found


@contextlib.contextmanager
def view(root: Root, cpu: str) -> Iterator[Path]:
    """A per-run directory for qemu's -L: links to the root's system directories and an ARM
    /proc/cpuinfo. Only those paths are redirected; everything else is the host's."""
    with tempfile.TemporaryDirectory(prefix="edgekd-view.") as tmp:
        top = Path(tmp)
        for name in VIEW_ENTRIES:
            (top / name).symlink_to(root.sysroot / name)
        (top / "proc").mkdir()
        (top / "proc" / "cpuinfo").write_text(cpuinfo(root.arch, cpu, host_processors()))
        yield top


def run_python(root: Root, args: list[str], cpu: str, timeout: float,
               ) -> subprocess.CompletedProcess:
    """Run the root's Python with `args` under qemu on the emulated core `cpu`."""
    env = {"QEMU_CPU": cpu, "PYTHONPATH": str(root.site), "PYTHONNOUSERSITE": "1",
           "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(Path.home()),
           "TMPDIR": tempfile.gettempdir()}
    with view(root, cpu) as top:
        python = top / "usr" / "bin" / f"python{PYTHON}"
        argv = [ARCHES[root.arch].qemu, "-L", str(top), str(python), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def _check(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise PrepareError(f"{what} failed (exit {done.returncode}): "
                           f"{_tail(done.stderr or done.stdout)}")


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:]) or "(no output)"
