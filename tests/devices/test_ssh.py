"""The SSH transport against a real OpenSSH server on 127.0.0.1 (see conftest.Sshd)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from devhelpers import descendants

from edgekd.devices.measure import DeviceError, profile
from edgekd.devices.profiles import DeviceProfile, load_profile, parse_overrides
from edgekd.devices.transports import Ssh


def assert_measured(result, runs: int) -> None:
    m = result.metrics
    assert result.measured and result.attempts == 1
    assert 0 < m["latency_ms_min"] <= m["latency_ms_p50"] <= m["latency_ms_p90"] \
        <= m["latency_ms_p99"] <= m["latency_ms_max"]
    assert m["peak_memory_mb"] > m["baseline_memory_mb"] > 0
    assert m["load_ms"] > 0 and m["first_inference_ms"] > 0
    assert result.conditions["runs"] == runs and result.conditions["transport"] == "ssh"


@pytest.mark.parametrize("name, runtime", [("tflite_int8", "ai_edge_litert"),
                                           ("onnx_int8", "onnxruntime")])
def test_int8_models_over_ssh(sshd, models, tmp_path, name, runtime):
    device = load_profile(str(sshd.profile(tmp_path)))
    result = profile(models[name], device, runs=30, warmup=3, data=models["data"])
    assert_measured(result, 30)
    assert result.runtime == runtime
    assert result.metrics["accuracy"] >= 0.8  # int8 against the fp32 model's own labels
    assert result.conditions["samples"] == 64
    assert list((tmp_path / "device-work").iterdir()) == []  # the run's folder was removed


def test_wrong_key_is_an_auth_failure_retried_then_reported(sshd, models, tmp_path):
    device = load_profile(str(sshd.profile(tmp_path, identity_file=str(sshd.other_key),
                                           retries=1)))
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_int8"], device, runs=5)
    assert err.value.kind == "infrastructure" and err.value.reason == "auth"
    assert err.value.attempts == 2
    assert "authentication refused" in str(err.value) and "127.0.0.1" in str(err.value)


def test_unknown_host_key_refused_unless_allowed(sshd, models, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    device = load_profile(str(sshd.profile(tmp_path, known_hosts=str(empty), retries=0)))
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], device, runs=5)
    assert err.value.reason == "host_key"
    assert empty.read_text() == ""
    trusting = device.model_copy(update={"allow_unknown_host_key": True})
    assert profile(models["onnx_fp32"], trusting, runs=5).measured
    assert "ssh-ed25519" in empty.read_text()  # trusted on first use, and remembered


def test_closed_port_is_unreachable(sshd, models, tmp_path):
    from devhelpers import free_port

    device = load_profile(str(sshd.profile(tmp_path, port=free_port(), retries=2)))
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], device, runs=5)
    assert (err.value.kind, err.value.reason, err.value.attempts) == \
        ("infrastructure", "unreachable", 3)


def test_unreachable_device_can_be_estimated(sshd, models, tmp_path):
    from devhelpers import free_port

    device = load_profile(str(sshd.profile(tmp_path, port=free_port(), retries=0,
                                           peak_int8_gops=50, peak_fp32_gflops=25,
                                           memory_bandwidth_gbs=4)))
    result = profile(models["onnx_int8"], device, runs=5, on_unreachable="estimate")
    assert not result.measured and result.runtime == "estimate" and result.attempts == 1
    assert result.metrics["latency_ms_p90"] > 0 and result.metrics["peak_memory_mb"] > 0
    assert "load_ms" not in result.metrics and "accuracy" not in result.metrics
    assert result.conditions["precision"] == "int8" and result.conditions["macs"] > 0
    assert "unreachable" in result.conditions["unreachable"]


def test_model_failure_is_not_retried(sshd, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    device = load_profile(str(sshd.profile(tmp_path, retries=3)))
    with pytest.raises(DeviceError) as err:
        profile(bad, device, runs=5)
    assert err.value.kind == "model" and err.value.attempts == 1
    assert list((tmp_path / "device-work").iterdir()) == []


def test_missing_python_is_a_setup_failure(sshd, models, tmp_path):
    device = load_profile(str(sshd.profile(tmp_path, python="/nonexistent/python3")))
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], device, runs=5)
    assert (err.value.kind, err.value.reason, err.value.attempts) == \
        ("infrastructure", "setup", 1)
    assert "/nonexistent/python3" in str(err.value)


def test_names_and_paths_cannot_inject_commands(sshd, models, tmp_path):
    marker = tmp_path / "pwned"
    work = tmp_path / f"odd dir; touch {marker}; $(touch {marker}) `touch {marker}`"
    model = tmp_path / "my model; rm -rf ~.onnx"
    model.write_bytes(models["onnx_fp32"].read_bytes())
    device = load_profile(str(sshd.profile(tmp_path, work_dir=str(work))))
    result = profile(model, device, runs=5)
    assert result.measured
    assert not marker.exists()
    assert list(work.iterdir()) == []


def test_killing_sshd_mid_run_is_retried(own_sshd, models, tmp_path):
    """sshd and its connections die while the runner is running; the retry, against the
    restarted server, measures."""
    device = load_profile(str(own_sshd.profile(tmp_path, retries=2, retry_delay_s=0.5)))
    work = str(tmp_path / "device-work")
    killed = threading.Event()

    def kill_when_runner_starts():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            for pid in descendants(own_sshd.proc.pid):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"runner.py" in cmdline and work.encode() in cmdline:
                    own_sshd.kill()
                    own_sshd.start()
                    killed.set()
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_when_runner_starts, daemon=True)
    watcher.start()
    result = profile(models["onnx_fp32"], device, runs=200, warmup=5)
    watcher.join(5)
    assert killed.is_set()
    assert result.attempts == 2 and result.measured
    assert result.metrics["latency_ms_p99"] > 0


def user_ssh_config(sshd, tmp_path, *lines: str) -> Path:
    """A user's own ~/.ssh/config with a `Host mypi` alias for the test server (passed with
    the profile's ssh_config, i.e. `ssh -F`: ssh finds ~ from the password database, not
    $HOME, so a throwaway HOME would not do)."""
    known = tmp_path / "user_known_hosts"
    known.touch()
    config = tmp_path / "ssh_config"
    config.write_text("\n".join([
        "Host mypi", "  HostName 127.0.0.1", f"  Port {sshd.port}",
        f"  User {os.environ.get('USER', 'root')}", f"  IdentityFile {sshd.client_key}",
        "  IdentitiesOnly yes", f"  UserKnownHostsFile {known}", *lines, ""]))
    return config


def mypi(config: Path, tmp_path: Path, *extra: str):
    """The shipped rpi4 profile, as the issue ran it: --set host=mypi (and where to run)."""
    return load_profile("rpi4", parse_overrides([
        "host=mypi", f"ssh_config={config}", f"python={sys.executable}",
        f"work_dir={tmp_path / 'device-work'}", "retries=0", "connect_timeout_s=5", *extra]))


def test_user_ssh_config_is_not_overridden(sshd, models, tmp_path):
    """User, Port, IdentityFile and StrictHostKeyChecking accept-new come from the user's
    `Host mypi` entry: the profile sets none of them, so edgekd passes none."""
    config = user_ssh_config(sshd, tmp_path, "  StrictHostKeyChecking accept-new")
    device = mypi(config, tmp_path)
    options = Ssh(device).options()
    assert not any(o.startswith(("User=", "Port=", "StrictHostKeyChecking=")) for o in options)
    result = profile(models["onnx_fp32"], device, runs=5)
    assert result.measured and result.conditions["address"] == "mypi"
    assert "ssh-ed25519" in (tmp_path / "user_known_hosts").read_text()  # accepted, as told


def test_user_timeouts_and_keepalives_are_kept(sshd, models, tmp_path):
    """ConnectTimeout and ServerAliveInterval are edgekd's only where the user's config has
    none: a user's `ConnectTimeout 30` for a slow link is not cut to the profile's 5 s."""
    plain = Ssh(mypi(user_ssh_config(sshd, tmp_path), tmp_path)).options()
    assert "ConnectTimeout=5" in plain and "ServerAliveInterval=5" in plain
    config = user_ssh_config(sshd, tmp_path, "  StrictHostKeyChecking accept-new",
                             "  ConnectTimeout 30", "  ServerAliveInterval 60")
    device = mypi(config, tmp_path)
    options = Ssh(device).options()
    assert not any(o.startswith(("ConnectTimeout=", "ServerAlive")) for o in options)
    assert profile(models["onnx_fp32"], device, runs=3).measured


def test_unknown_host_key_refused_by_ssh_default_and_by_the_profile(sshd, models, tmp_path):
    """Unknown keys stay refused unless the user's config or the profile allows them: ssh's
    own default (ask) refuses in batch mode, and the profile's `false` beats accept-new."""
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], mypi(user_ssh_config(sshd, tmp_path), tmp_path), runs=5)
    assert err.value.reason == "host_key"
    config = user_ssh_config(sshd, tmp_path, "  StrictHostKeyChecking accept-new")
    with pytest.raises(DeviceError) as err:
        profile(models["onnx_fp32"], mypi(config, tmp_path, "allow_unknown_host_key=false"),
                runs=5)
    assert err.value.reason == "host_key"
    assert (tmp_path / "user_known_hosts").read_text() == ""


def test_profile_user_and_port_are_passed_when_set(sshd, tmp_path):
    device = load_profile(str(sshd.profile(tmp_path)))
    options = Ssh(device).options()
    assert f"Port={sshd.port}" in options and any(o.startswith("User=") for o in options)


def test_option_like_host_reaches_ssh_and_scp_as_a_host(sshd, tmp_path):
    """Past validation (model_construct skips it), `--` still keeps a host from being read as
    an option by ssh and scp: the ProxyCommand never runs."""
    marker = tmp_path / "pwned"
    values = load_profile(str(sshd.profile(tmp_path))).model_dump()
    device = DeviceProfile.model_construct(**{**values, "retries": 0,
                                              "host": f"-oProxyCommand=touch {marker}"})
    transport = Ssh(device)
    calls = [transport.connect, lambda: transport.run(["true"], 10),
             lambda: transport.push(Path(__file__), "/tmp/x"),
             lambda: transport.pull("/tmp/x", tmp_path / "x")]
    for call in calls:
        with pytest.raises(DeviceError):
            call()
    transport.close()
    assert not marker.exists()


def test_local_file_named_like_an_option_is_copied(sshd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("-q.onnx").write_bytes(b"model bytes")
    transport = Ssh(load_profile(str(sshd.profile(tmp_path))))
    try:
        transport.connect()
        transport.push(Path("-q.onnx"), str(tmp_path / "pushed"))
        transport.pull(str(tmp_path / "pushed"), Path("-r"))
    finally:
        transport.close()
    assert Path("-r").read_bytes() == b"model bytes"
