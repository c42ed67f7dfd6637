"""Run the scripts the Dockerfiles call, here, without Docker.

The Python environment they install into is a fresh venv that sees this project's installed
stack through a .pth file, so the pinned requirements are already satisfied and pip only
checks them; what runs is the real script, the real runner and the real runtimes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def make_venv(path: Path, with_pip: bool = False) -> Path:
    """A venv that also sees this environment's packages (a .pth file), so the pinned stack is
    already satisfied there and pip installs nothing from the network for it."""
    flags = [] if with_pip else ["--without-pip"]
    subprocess.run([sys.executable, "-m", "venv", *flags, str(path)], check=True)
    site = next((path / "lib").glob("python3*/site-packages"))
    (site / "host-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv") / "venv")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_install_runtime_installs_the_runner_and_sees_both_runtimes(venv, tmp_path):
    dest = tmp_path / "opt"
    done = subprocess.run(
        [str(DOCKER / "install-runtime.sh"), str(DOCKER / "device-arm64" / "requirements.txt"),
         str(dest)], env={**os.environ, "PYTHON": str(venv / "bin" / "python")},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (dest / "runner.py").read_text() == (ROOT / "edgekd/devices/runner.py").read_text()
    listed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"ai_edge_litert", "onnxruntime"} <= set(listed["runtimes"])


def test_install_runtime_fails_when_a_runtime_is_missing(tmp_path):
    """A venv that really lacks the runtimes, with pip pointed at nothing: the script stops."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    fake_pip = tmp_path / "python"
    # An interpreter whose `-m pip` succeeds without installing: the runner check must catch it.
    fake_pip.write_text(f"#!/bin/sh\n[ \"$1\" = -m ] && [ \"$2\" = pip ] && exit 0\n"
                        f"exec {bare / 'bin' / 'python'} \"$@\"\n")
    fake_pip.chmod(0o755)
    done = subprocess.run(
        [str(DOCKER / "install-runtime.sh"), str(DOCKER / "device-arm64" / "requirements.txt"),
         str(tmp_path / "opt")], env={**os.environ, "PYTHON": str(fake_pip)},
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "does not see" in done.stderr or "numpy" in done.stdout + done.stderr


TRTEXEC = """#!/bin/sh
# Stand-in for JetPack's trtexec (a vendor binary that cannot be installed here): its --help
# banner, in trtexec's own format.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
echo "=== Model Options ==="
echo "  --onnx=<file>               ONNX model"
exit 0
"""


def test_jetson_install_puts_trtexec_on_path(venv, tmp_path):
    tensorrt = tmp_path / "usr/src/tensorrt/bin"
    tensorrt.mkdir(parents=True)
    (tensorrt / "trtexec").write_text(TRTEXEC)
    (tensorrt / "trtexec").chmod(0o755)
    env = {**os.environ, "PYTHON": str(venv / "bin" / "python"), "TENSORRT_BIN": str(tensorrt),
           "BIN_DIR": str(tmp_path / "bin"), "ONNXRUNTIME": "cpu",
           # the Jetson pins are for Python 3.10 on aarch64; here the arm64 image's pins are
           # the ones this environment satisfies
           "REQUIREMENTS": str(DOCKER / "device-arm64" / "requirements.txt")}
    done = subprocess.run([str(DOCKER / "jetson" / "install.sh"), str(tmp_path / "opt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "bin" / "trtexec").resolve() == (tensorrt / "trtexec").resolve()
    assert (tmp_path / "opt" / "runner.py").is_file()


def test_jetson_install_fails_without_tensorrt(venv, tmp_path):
    env = {**os.environ, "PYTHON": str(venv / "bin" / "python"),
           "TENSORRT_BIN": str(tmp_path / "none"), "BIN_DIR": str(tmp_path / "bin"),
           "ONNXRUNTIME": "cpu",
           "REQUIREMENTS": str(DOCKER / "device-arm64" / "requirements.txt")}
    done = subprocess.run([str(DOCKER / "jetson" / "install.sh"), str(tmp_path / "opt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "no trtexec" in done.stderr


def test_jetson_install_stops_when_the_gpu_index_has_no_onnxruntime_gpu(venv, tmp_path):
    """The default (ONNXRUNTIME=gpu) takes onnxruntime-gpu only from the Jetson index: when that
    index cannot give it, the build stops and says what to do, rather than go on without it."""
    nowhere = "http://127.0.0.1:9/simple"  # the discard port: nothing answers
    env = {**os.environ, "PYTHON": str(venv / "bin" / "python"), "ORT_INDEX_URL": nowhere,
           "PIP_INDEX_URL": nowhere, "PIP_CONFIG_FILE": os.devnull,  # no local wheel indexes
           "PIP_RETRIES": "0", "TENSORRT_BIN": str(tmp_path / "none"),
           "BIN_DIR": str(tmp_path / "bin")}
    for name in ("ONNXRUNTIME", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        env.pop(name, None)
    done = subprocess.run([str(DOCKER / "jetson" / "install.sh"), str(tmp_path / "opt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert f"could not install onnxruntime-gpu from {nowhere}" in done.stderr
    assert "ONNXRUNTIME=cpu" in done.stderr
    assert not (tmp_path / "opt" / "runner.py").exists()


def test_jetson_install_refuses_an_unknown_onnxruntime_choice(tmp_path):
    done = subprocess.run([str(DOCKER / "jetson" / "install.sh"), str(tmp_path / "opt")],
                          env={**os.environ, "ONNXRUNTIME": "cuda"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "ONNXRUNTIME must be gpu or cpu" in done.stderr


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_workstation_packages_resolve_with_apt():
    lists = Path("/var/lib/apt/lists")
    if not any(lists.glob("*_Packages*")):
        pytest.skip("apt has no package lists here (run apt-get update)")
    done = subprocess.run([str(DOCKER / "workstation" / "system.sh"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.match(r"ok: \d+ packages resolve", done.stdout)


@pytest.mark.slow
def test_workstation_install_runs_the_makefile_install(tmp_path):
    """install.sh -> make install into a given venv -> `edgekd --version` works from it."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache"))
    target = make_venv(tmp_path / "venv", with_pip=True)
    done = subprocess.run([str(DOCKER / "workstation" / "install.sh"), str(project),
                           str(target)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    from edgekd import __version__

    assert __version__ in done.stdout
    assert (target / ".installed").exists()


def test_image_pins_match_constraints_and_validate_arch():
    from edgekd.arch.sysroot import WHEELS

    arm64 = pins(DOCKER / "device-arm64" / "requirements.txt")
    constraints = pins(ROOT / "constraints.txt")
    emulated = {w.split("==")[0]: w.split("==")[1] for w in WHEELS}
    assert arm64 == emulated
    for name, version in arm64.items():
        assert constraints.get(name) == version, f"{name}: constraints.txt has " \
                                                 f"{constraints.get(name)}, the image {version}"
    jetson = pins(DOCKER / "jetson" / "requirements.txt")
    assert set(jetson) == set(arm64)
    assert jetson["ai-edge-litert"] == arm64["ai-edge-litert"]
    gpu = pins(DOCKER / "jetson" / "requirements-gpu.txt")
    assert set(gpu) == {"numpy", "onnxruntime-gpu", "ai-edge-litert"}
    assert gpu["ai-edge-litert"] == jetson["ai-edge-litert"]
    # the Jetson AI Lab onnxruntime-gpu wheel is built against numpy 1.x
    assert gpu["numpy"].startswith("1."), gpu["numpy"]


def _resolve(requirements: Path, python: str, machine: str, glibc_minor: int) -> dict:
    from edgekd.arch.sysroot import wheel_platforms

    platforms = [a for tag in wheel_platforms(machine, glibc_minor) for a in ("--platform", tag)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
         "--no-deps", "--ignore-installed", "--target", "/nonexistent", "--only-binary", ":all:",
         "--python-version", python, "--implementation", "cp", *platforms, "-r",
         str(requirements)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"]
            for i in json.loads(done.stdout)["install"]}


@pytest.mark.slow
def test_device_image_pins_have_wheels_for_their_platform():
    """The pinned runtimes exist as wheels for the images' Python and glibc (asks PyPI)."""
    arm64 = _resolve(DOCKER / "device-arm64" / "requirements.txt", "3.11", "aarch64", 36)
    assert arm64 == pins(DOCKER / "device-arm64" / "requirements.txt")
    jetson = _resolve(DOCKER / "jetson" / "requirements.txt", "3.10", "aarch64", 35)
    assert jetson == pins(DOCKER / "jetson" / "requirements.txt")
