"""Device profiles: every shipped YAML is a test case; overrides are validated like files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.config import ConfigError
from edgekd.devices.profiles import (
    DeviceProfile,
    devices_dir,
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
    # Left to the user's ~/.ssh/config: a value here would override theirs.
    assert device.user is None and device.port is None and device.allow_unknown_host_key is None


def test_overrides_change_fields_and_are_validated():
    device = load_profile("rpi4", parse_overrides(["host=mypi", "port=2222",
                                                   "python=/opt/venv/bin/python3"]))
    assert (device.host, device.port, device.python) == ("mypi", 2222, "/opt/venv/bin/python3")
    assert device.address == "mypi:2222"
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


def test_profiles_are_package_data():
    import edgekd

    assert devices_dir() == Path(edgekd.__file__).parent / "profiles"
    assert not (Path(edgekd.__file__).parents[1] / "devices").exists()  # one copy only


OPTION_LIKE = [("host", "-oProxyCommand=touch /tmp/pwned"), ("user", "-oProxyCommand=x"),
               ("serial", "-a"), ("work_dir", "-rf"), ("python", "-c"), ("trtexec", "--help")]
BAD_NAMES = [("host", "my pi"), ("host", "pi\nProxyCommand x"), ("user", "pi\t"),
             ("serial", "emulator 5554")]


@pytest.mark.parametrize("field, value", OPTION_LIKE + BAD_NAMES + [("work_dir", "/tmp/a\nb")])
def test_option_like_or_broken_names_are_refused_in_files(tmp_path, field, value):
    transport = "adb" if field == "serial" else "ssh"
    doc = {"transport": transport, "host": "pi", "serial": "x", field: value}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    (line,) = err.value.lines
    assert line.startswith(f"{path}: {field}: must not ") and repr(value) in line


@pytest.mark.parametrize("field, value", OPTION_LIKE)
def test_option_like_set_values_name_the_flag_exit_2(tmp_path, field, value):
    """`--set host=-oProxyCommand=...` stops before ssh runs: exit 2, one line."""
    device = "android" if field == "serial" else "rpi4"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = CliRunner().invoke(cli, ["profile", str(model), "--device", device,
                                      "--set", f"{field}={value}"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"--set {field}: must not start with '-' (ssh, scp and adb would read it as an option): "
        f"{value!r}"]


def test_spaces_in_device_paths_are_fine():
    device = load_profile("rpi4", {"work_dir": "/tmp/my runs", "python": "/opt/my env/python3"})
    assert (device.work_dir, device.python) == ("/tmp/my runs", "/opt/my env/python3")


@pytest.mark.parametrize("fields, suffix, wrong", [
    ({"python": "none", "runtime": "benchmark_model"}, ".tflite", None),
    ({"python": "none", "runtime": "benchmark_model"}, ".pte", None),  # executor_runner
    ({"python": "none", "runtime": "benchmark_model"}, ".onnx", "python"),
    ({"python": "none"}, ".tflite", "python"),
    ({"runtime": "trtexec"}, ".tflite", None),  # the Python runner, runtime auto
    ({"runtime": "tensorflow"}, ".tflite", None),
    ({"runtime": "tensorflow"}, ".onnx", "runtime"),
    ({"runtime": "onnxruntime"}, ".pte", "runtime"),
    ({}, ".onnx", None),
])
def test_a_device_that_cannot_run_a_file_says_which_field(fields, suffix, wrong):
    """The same choice edgekd.devices.measure makes, made before anything is pushed."""
    problem = DeviceProfile(name="d", **fields).method_problem(suffix)
    assert (problem[0] if problem else None) == wrong


@pytest.mark.parametrize("value, ok", [("python3", True), ("/usr/bin/python3.11", True),
                                       ("/home/pi/venv/bin/python", True), ("pypy3", True),
                                       ("none", True), ("bash", False), ("/bin/rm", False)])
def test_python_is_an_interpreter_or_none(value, ok):
    if ok:
        assert DeviceProfile(name="d", python=value).python == value
    else:
        with pytest.raises(ValueError, match="does not look like a Python interpreter"):
            DeviceProfile(name="d", python=value)


@pytest.mark.parametrize("mask", ["0", "0x0", "00", "f0g", "-1"])
def test_a_cpu_mask_selects_a_core(mask):
    with pytest.raises(ValueError, match="cpu_mask"):
        DeviceProfile(name="d", transport="ssh", host="pi", cpu_mask=mask)


def test_a_target_file_is_taken_from_the_pipelines_folder(tmp_path, monkeypatch):
    from edgekd.devices.profiles import find_profile

    (tmp_path / "sub").mkdir()
    (tmp_path / "dev.yaml").write_text("transport: local\n")
    monkeypatch.chdir(tmp_path)
    assert find_profile("dev.yaml") == Path("dev.yaml")  # `--device dev.yaml`: here
    with pytest.raises(ConfigError, match=r"dev.yaml: not found \(.*sub/dev.yaml\)"):
        find_profile("dev.yaml", relative_to=tmp_path / "sub")
    (tmp_path / "sub" / "dev.yaml").write_text("transport: local\n")
    assert find_profile("dev.yaml", relative_to=tmp_path / "sub") == tmp_path / "sub" / "dev.yaml"
    assert find_profile("local", relative_to=tmp_path / "sub") == devices_dir() / "local.yaml"


def test_threads_are_bounded_in_files_and_set_numbers_are_read(tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text("transport: local\nthreads: 99999999999999999999\n")
    with pytest.raises(ConfigError, match=r"dev.yaml: threads: .*1024"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match=r"--set threads: .*1024"):
        load_profile("local", {"threads": "100000"})
    with pytest.raises(ConfigError, match=r"--set threads: expected a number"):
        load_profile("local", {"threads": "four"})
    assert load_profile("local", {"threads": "4", "timeout_s": "2.5"}).threads == 4
    path.write_text('transport: local\nthreads: "4"\n')  # a string in a file is no number
    with pytest.raises(ConfigError, match="threads: expected a number, not the string"):
        load_profile(str(path))
