"""Device profiles: every shipped YAML is a test case; overrides are validated like files."""

from __future__ import annotations

import pytest

from edgekd.config import ConfigError
from edgekd.devices.profiles import (
    DeviceProfile,
    load_profile,
    parse_overrides,
    profile_names,
)

SHIPPED = ("android", "jetson-orin-nano", "local", "pixel7", "rpi4", "rpi5")


def test_the_issue_profiles_are_shipped():
    assert set(SHIPPED) <= set(profile_names())


@pytest.mark.parametrize("name", profile_names())
def test_shipped_profile_is_valid_and_can_estimate(name):
    device = load_profile(name)
    assert device.name == name
    assert device.peak_int8_gops and device.peak_fp32_gflops and device.memory_bandwidth_gbs
    assert device.peak_int8_gops >= device.peak_fp32_gflops  # int8 is never slower on paper
    if device.transport == "adb":
        assert device.python == "none" and device.runtime == "benchmark_model"
    if device.arch != "x86_64":
        assert device.ram_mb


def test_overrides_change_fields_and_are_validated():
    device = load_profile("rpi4", parse_overrides(["host=mypi", "port=2222",
                                                   "python=/opt/venv/bin/python3"]))
    assert (device.host, device.port, device.python) == ("mypi", 2222, "/opt/venv/bin/python3")
    assert device.address == "pi@mypi:2222"
    with pytest.raises(ConfigError, match=r"--set hots: unknown device field \(did you mean "
                                          r"host\?\)"):
        load_profile("rpi4", {"hots": "x"})
    with pytest.raises(ConfigError, match="port"):
        load_profile("rpi4", {"port": "eighty"})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["host"])


def test_unknown_name_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown device .pixl7. \(did you mean pixel7\?\)"):
        load_profile("pixl7")
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(tmp_path / "nope.yaml"))


def test_profile_file_errors_name_file_and_field(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("transport: ssh\nhost: pi\nthreds: 4\nport: 0\n")
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert f"{path}: threds: unknown key (did you mean threads?)" in err.value.lines
    assert any(line.startswith(f"{path}: port: ") for line in err.value.lines)
    path.write_text("transport: ssh\n")
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert err.value.lines == [f"{path}: host: required for the ssh transport"]


def test_transport_needs_its_address():
    with pytest.raises(ValueError, match="serial"):
        DeviceProfile(name="x", transport="adb")
