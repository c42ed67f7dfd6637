"""Device profiles: YAML files validated like pipelines.

`--device` takes the name of a profile shipped with edgekd (package data in edgekd/profiles/)
or a path to a profile YAML, and any field can be overridden (`--set host=mypi`). Names and
paths that reach ssh, scp and adb as arguments are checked here: none may look like an option.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd.files import kind_problem
from edgekd.schema import ConfigError, Strict, did_you_mean, parse, path_problem, read_yaml, takes

MAX_THREADS = 1024
"""The most threads a profile or --threads may ask for: more than any device has cores, far
fewer than would crash a runtime (a huge count overflows its C int; 100000 segfaults)."""


class DeviceProfile(Strict):
    """How to reach a device, how to run models on it, and its spec figures for estimates."""

    name: str
    description: str = ""
    transport: Literal["local", "ssh", "adb"] = "local"
    host: str | None = None
    """SSH host name, address, or an alias from ~/.ssh/config."""
    user: str | None = None
    """SSH user; unset: the one ~/.ssh/config gives, else the local user name."""
    port: int | None = Field(None, ge=1, le=65535)
    """SSH port; unset: the one ~/.ssh/config gives, else 22."""
    serial: str | None = None
    """ADB serial (`adb devices`), or host:port of a device reached over TCP (`adb connect`)."""
    identity_file: Path | None = None
    """SSH private key; default the user's agent and ~/.ssh/config."""
    ssh_config: Path | None = None
    """An ssh_config file used instead of ~/.ssh/config (`ssh -F`)."""
    known_hosts: Path | None = None
    """A known_hosts file used instead of ~/.ssh/known_hosts."""
    allow_unknown_host_key: bool | None = None
    """true: accept a host key not yet in known_hosts (trust on first use); false: refuse it;
    unset: as ~/.ssh/config says (StrictHostKeyChecking), which by default refuses it. A
    changed key is always refused."""
    connect_timeout_s: float = Field(10, gt=0)
    """How long to wait for the device to answer before calling it unreachable."""
    work_dir: str = "/tmp/edgekd"
    """Directory on the device under which each run makes (and removes) its own folder."""
    python: str = "python3"
    """Python on the device; `none` for devices without one (Android: benchmark_model). The
    local transport runs `python3` as the Python running edgekd."""
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime",
                     "executorch", "benchmark_model", "trtexec", "executor_runner"] = "auto"
    """Preferred runtime. benchmark_model is used for .tflite files, trtexec for .onnx files
    and executor_runner for .pte files; other files fall back to the Python runner with
    `auto`. On a device without Python, .pte files always go to executor_runner."""
    benchmark_binary: Path | None = None
    """benchmark_model on the workstation, pushed to the device when the runtime needs it."""
    executor_runner: Path | None = None
    """ExecuTorch's executor_runner (built with XNNPACK for the device) on the workstation,
    pushed to the device for .pte files when the runtime is executor_runner or the device has
    no Python."""
    trtexec: str = "trtexec"
    """trtexec on the device (JetPack puts it in /usr/src/tensorrt/bin)."""
    threads: int = Field(1, ge=1, le=MAX_THREADS)
    """Threads the runtime uses (1..MAX_THREADS); --threads overrides it."""
    cpu_mask: str | None = None
    """taskset mask (hex, one bit per core) to pin the run to cores, e.g. "f0" for cores
    4-7, the big cores of many phones."""
    arch: Literal["x86_64", "aarch64", "armv7l"] = "x86_64"
    ram_mb: int | None = Field(None, ge=1)
    peak_int8_gops: float | None = Field(None, gt=0)
    """Spec figure used only for estimates: dense int8 operations per second / 1e9, one
    multiply-accumulate counting as two operations (how vendors quote TOPS)."""
    peak_fp32_gflops: float | None = Field(None, gt=0)
    """Spec figure used only for estimates: fp32 operations per second / 1e9 (FMA = 2)."""
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    """Spec figure used only for estimates: DRAM bandwidth in GB/s."""
    estimate_efficiency: float = Field(0.2, gt=0, le=1)
    """Share of the peak figures a batch-1 model reaches; roofline estimates only (devices
    without a calibration_board)."""
    calibration_board: str | None = None
    """A board in edgekd/profiles/published/latency.yaml (rpi4, rpi5): estimates for this
    device are then fitted to that board's published measurements instead of the roofline."""
    runtime_memory_mb: float = Field(30, ge=0)
    """Memory of the process and runtime before a model loads; estimates only."""
    timeout_s: float = Field(300, gt=0)
    """Wall-clock limit for one measurement on the device."""
    retries: int = Field(2, ge=0)
    """Retries after an infrastructure failure (unreachable, auth, offline, timeout); never
    after a model failure."""
    retry_delay_s: float = Field(3, ge=0)
    """Pause before a retry, so a device that rebooted or re-joined the network can answer."""
    max_cv: float = Field(0.25, gt=0)
    """Latency coefficient of variation (std / mean) above which a result is marked suspect."""
    max_temperature_c: float = Field(80, gt=0)
    """Temperature above which a result is marked suspect."""

    @field_validator("host", "user", "serial")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        """A name ssh or adb is given as an argument: never an option, and (unlike paths)
        without spaces or control characters, which no host, user or serial has."""
        if value is not None:
            _not_an_option(value)
            if re.search(r"[\s\x00-\x1f\x7f]", value):
                raise ValueError(f"must not contain spaces or control characters: {value!r}")
        return value

    @field_validator("cpu_mask")
    @classmethod
    def _mask(cls, value: str | None) -> str | None:
        """A taskset mask that selects at least one core (taskset refuses 0 at run time)."""
        if value is not None:
            if not re.fullmatch(r"(0x)?[0-9a-fA-F]+", value):
                raise ValueError(f"{value!r} is not a hex CPU mask (one bit per core, e.g. f0 "
                                 "for cores 4-7 or 0x3 for cores 0-1)")
            if int(value, 16) == 0:
                raise ValueError(f"{value!r} selects no core; give a hex mask with a bit per "
                                 "core, e.g. f0 for cores 4-7")
        return value

    @field_validator("calibration_board")
    @classmethod
    def _published_board(cls, value: str | None) -> str | None:
        if value is not None:
            from edgekd.devices.published import load_published

            boards = sorted({row.board for row in load_published().rows})
            if value not in boards:
                raise ValueError(f"no published measurements for {value!r}"
                                 f"{did_you_mean(value, boards)}; known: {', '.join(boards)}")
        return value

    @field_validator("work_dir", "python", "trtexec")
    @classmethod
    def _device_path(cls, value: str) -> str:
        """A path or command on the device (spaces allowed: commands are quoted)."""
        _not_an_option(value)
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError(f"must not contain control characters: {value!r}")
        return value

    @field_validator("python")
    @classmethod
    def _interpreter(cls, value: str) -> str:
        """`none`, or a name or path whose file name says Python (python3, /usr/bin/python3.11,
        .../venv/bin/python, pypy3): anything else would be run as the device's Python.
        (After _device_path, so an option-like value is refused as such.)"""
        if value != "none" and not re.search(r"python|pypy", value.rsplit("/", 1)[-1], re.I):
            raise ValueError(f"{value!r} does not look like a Python interpreter; give a name "
                             "such as python3, a path such as /home/pi/venv/bin/python, or none "
                             "for a device without Python (benchmark_model, trtexec, "
                             "executor_runner)")
        return value

    @model_validator(mode="after")
    def _mask_on_this_machine(self) -> DeviceProfile:
        """The local transport is this machine: its mask must name a core edgekd may use."""
        if self.transport == "local" and self.cpu_mask and hasattr(os, "sched_getaffinity"):
            usable = sorted(os.sched_getaffinity(0))
            if not int(self.cpu_mask, 16) & sum(1 << cpu for cpu in usable):
                raise ValueError(f"cpu_mask: {self.cpu_mask!r} selects none of the cores this "
                                 f"machine lets edgekd use ({', '.join(map(str, usable))})")
        return self

    def method_problem(self, suffix: str) -> tuple[str, str] | None:
        """(field, what is wrong) when this device has no way to run `suffix` files (the
        choice edgekd.devices.measure makes: a vendor tool for its own suffix, executor_runner
        for .pte files without Python, else the Python runner), or None when it has one."""
        from edgekd.export.formats import RUNTIMES

        tool = TOOLS.get(self.runtime)
        if suffix not in TOOLS.values() or tool == suffix or \
                (suffix == ".pte" and self.python == "none"):
            return None
        if self.python == "none":
            needed = next((name for name, s in TOOLS.items() if s == suffix), None)
            return "python", (f"none (no Python on the device), so {suffix} files need "
                              f"runtime: {needed} (the runtime is {self.runtime})")
        runners = [n for r in RUNTIMES.values() if r.suffix == suffix for n in r.device_runtimes]
        if tool is None and self.runtime != "auto" and self.runtime not in runners:
            return "runtime", (f"{self.runtime} cannot run {suffix} files; give auto or one "
                               f"of {', '.join(runners)}")
        return None

    @model_validator(mode="after")
    def _address_for_transport(self) -> DeviceProfile:
        if self.transport == "ssh" and not self.host:
            raise ValueError("host: required for the ssh transport")
        if self.transport == "adb" and not self.serial:
            raise ValueError("serial: required for the adb transport")
        return self

    @property
    def address(self) -> str:
        """Where the device is, for messages: user@host:port, the ADB serial, or `local`."""
        if self.transport == "ssh":
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"{user}{self.host}{port}"
        if self.transport == "adb":
            return str(self.serial)
        return "local"


TOOLS = {"benchmark_model": ".tflite", "trtexec": ".onnx", "executor_runner": ".pte"}
"""The vendor tools `runtime:` may name, and the files each runs; other files go to the
Python runner (runtime auto)."""


def _not_an_option(value: str) -> None:
    if value.startswith("-"):
        raise ValueError(f"must not start with '-' (ssh, scp and adb would read it as an "
                         f"option): {value!r}")


def devices_dir() -> Path:
    """Where the device profiles shipped with edgekd live: package data, edgekd/profiles/
    (override with EDGEKD_DEVICES). A real folder: edgekd is never installed zipped."""
    env = os.environ.get("EDGEKD_DEVICES")
    return Path(env) if env else Path(resources.files("edgekd") / "profiles")


def profile_names() -> list[str]:
    return sorted(p.stem for p in devices_dir().glob("*.yaml"))


def find_profile(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The YAML file for a profile name or path; ConfigError with a suggestion if none. A
    relative path is taken from `relative_to` (a pipeline's folder) when given, else from the
    current directory; a name (no .yaml suffix) is a profile shipped with edgekd."""
    if path_problem(name_or_path):  # the system would refuse it, quoting it whole
        raise ConfigError([f"device profile: {path_problem(name_or_path)}"])
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        path = candidate if relative_to is None else relative_to / candidate
        problem = kind_problem(path, "file")
        if problem:
            raise ConfigError([f"device profile file {name_or_path}: {problem}"
                               + (f" ({path})" if path != candidate else "")])
        return path
    path = devices_dir() / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    hint = did_you_mean(name_or_path, profile_names())
    raise ConfigError([f"unknown device {name_or_path!r}{hint}; known: "
                       f"{', '.join(profile_names())}"])


def load_profile(name_or_path: str, overrides: dict[str, str] | None = None,
                 relative_to: Path | None = None, runs: tuple[str, ...] = ()) -> DeviceProfile:
    """Load a device profile and apply `--set key=value` overrides (validated like the file);
    with `runs` (suffixes), also check that the device has a way to run such files."""
    path = find_profile(name_or_path, relative_to)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping of keys at the top level"])
    raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if key not in DeviceProfile.model_fields:
            hint = did_you_mean(key, DeviceProfile.model_fields)
            raise ConfigError([f"--set {key}: unknown device field{hint}"])
        raw[key] = None if value in ("", "null", "none") and key != "python" else \
            _number(value) if "number" in takes(DeviceProfile.model_fields[key].annotation) \
            else value
    try:
        device = parse(DeviceProfile, raw, str(path))
        problems = [p for p in map(device.method_problem, dict.fromkeys(runs)) if p]
        if problems:
            raise ConfigError([f"{path}: {field}: {why}" for field, why in problems])
        return device
    except ConfigError as exc:
        raise ConfigError([_blame_flag(line, path, overrides or {}) for line in exc.lines]
                          ) from None


def _number(text: str) -> int | float | str:
    """`--set threads=4` as the number 4 (the profile refuses numbers given as strings);
    text that is no number stays text, for the field to refuse naming it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _blame_flag(line: str, path: Path, overrides: dict[str, str]) -> str:
    """`--set host: ...` for an error in a value given with --set, not `FILE: host: ...`."""
    rest = line.removeprefix(f"{path}: ")
    return f"--set {rest}" if rest.split(":")[0] in overrides else line


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["host=mypi", "port=2222"]` -> {"host": "mypi", "port": "2222"}; ConfigError if an item
    has no `=`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"--set {item}: expected key=value, e.g. --set host=mypi"])
        out[key.strip()] = value
    return out


def check_target(target: str, source: Path, runs: tuple[str, ...] = ()) -> Path:
    """The profile file of a pipeline's `target:`, read and validated now (before any stage
    trains), able to run files of the suffixes in `runs`; ConfigError naming the pipeline file
    and the field (`FILE: target: unknown device ...`, `FILE: target: dev.yaml: host: ...`)
    when there is none or it is invalid."""
    try:
        path = find_profile(target, relative_to=source.parent)
        load_profile(str(path), runs=runs)
        return path
    except ConfigError as exc:
        raise ConfigError([f"{source}: target: {line}" for line in exc.lines]) from None
