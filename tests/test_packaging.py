"""edgekd installed the way a user installs it (`pip install .`, not editable), away from the
checkout: the device profiles come with the package, and the demo pipeline validates and runs.

The fresh venv gets edgekd alone (`--no-deps`); a .pth file appended after its own
site-packages lends it this environment's dependencies (torch & co. would take minutes to
install), so edgekd itself can only come from the new install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with edgekd pip-installed (non-editable) from a copy of the sources; its
    bin folder."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy: an in-tree build would write build/ into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "edgekd", source / "edgekd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    (Path(site.stdout.strip()) / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"])
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-build-isolation", "--no-index", str(source)],
                   check=True, capture_output=True)
    return venv / "bin"


def run(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_installed_package_finds_its_device_profiles(installed, tmp_path):
    code = ("import edgekd; from edgekd.devices.profiles import load_profile, profile_names; "
            "print(edgekd.__file__); print(load_profile('local').transport); "
            "print(*profile_names()); from edgekd.devices.published import load_published; "
            "print(len(load_published().rows))")
    done = run([installed / "python", "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, transport, names, published = done.stdout.splitlines()
    assert int(published) > 0  # the calibration data of estimates ships too
    assert where.startswith(str(installed.parent)) and "site-packages" in where
    assert transport == "local"
    assert set(names.split()) == {p.stem for p in (ROOT / "edgekd" / "profiles").glob("*.yaml")}


@pytest.mark.slow
def test_installed_command_validates_the_demo_pipeline(installed, tmp_path):
    shutil.copy(ROOT / "pipelines" / "mobile.yaml", tmp_path)  # target: local
    done = run([installed / "edgekd", "validate", "mobile.yaml"], cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "ok: 1 file(s) valid"), done.stderr
    done = run([installed / "edgekd", "devices", "--no-check"], cwd=tmp_path)
    assert done.returncode == 0 and "rpi4" in done.stdout and "local" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_installed_command_runs_the_demo_pipeline(installed, tmp_path):
    """The whole demo from the non-editable install, away from the checkout: every stage,
    the device runner started from the installed package, the report."""
    import json

    shutil.copy(ROOT / "pipelines" / "mobile.yaml", tmp_path)
    done = subprocess.run([str(installed / "edgekd"), "run", "mobile.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "EDGEKD_PROGRESS": "0"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "runs" / "mobile" / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert [s["status"] for s in report["stages"]] == ["done"] * len(report["stages"])
    assert {"student_int8_onnx", "student_int8_tflite"} <= {a["name"]
                                                            for a in report["artifacts"]}
