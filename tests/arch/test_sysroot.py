"""The cached root's recipe, without preparing one."""

from pathlib import Path

import pytest

from edgekd.arch import sysroot

ROOT = Path(__file__).resolve().parents[2]


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sysroot.cache_dir() == tmp_path / "edgekd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sysroot.cache_dir() == tmp_path / "home" / ".cache" / "edgekd"


def test_wheel_platforms_cover_the_tags_the_pinned_wheels_use():
    # ai-edge-litert 2.x: manylinux_2_27; onnxruntime 1.32: manylinux_2_28; tflite-runtime
    # 2.14: manylinux_2_34; older wheels: manylinux2014. bookworm has glibc 2.36: nothing newer.
    tags = sysroot.wheel_platforms("aarch64")
    for tag in ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64",
                "manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_36_aarch64"):
        assert tag in tags
    assert "manylinux_2_38_aarch64" not in tags


def test_pinned_wheels_are_the_constraints_versions():
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            constraints[name.lower().replace("_", "-")] = version.strip()
    for requirement in sysroot.WHEELS:
        name, version = requirement.split("==")
        assert constraints[name] == version, f"{name}: emulated {version}, " \
                                             f"constraints {constraints[name]}"


def test_spec_key_changes_with_the_recipe(monkeypatch):
    key = sysroot.spec_key("arm64")
    monkeypatch.setattr(sysroot, "WHEELS", ("numpy==2.4.6",))
    assert sysroot.spec_key("arm64") != key


def test_cpuinfo_describes_an_arm_core_per_processor():
    text = sysroot.cpuinfo("arm64", "cortex-a72", [0, 1, 2])
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 3
    assert all("CPU implementer\t: 0x41" in b and "CPU part\t: 0xd08" in b for b in blocks)
    assert "processor\t: 2" in blocks[2]


def test_host_processors_matches_sysfs():
    present = Path("/sys/devices/system/cpu/present")
    if not present.exists():
        pytest.skip("no sysfs")
    found = sysroot.host_processors()
    assert found and found == sorted(set(found))
    assert len(found) >= 1


def test_missing_tools_name_their_debian_packages(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = " ".join(sysroot.missing_tools("arm64"))
    assert "qemu-aarch64-static (Debian package qemu-user-static)" in missing
    assert "debootstrap (Debian package debootstrap)" in missing
    with pytest.raises(sysroot.SetupError, match="apt-get install qemu-user-static"):
        sysroot.ensure("arm64")
