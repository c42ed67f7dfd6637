"""Device profiles: the YAML files in devices/, validated like pipelines.

`--device` takes a profile name (a file in devices/) or a path to a profile YAML, and any field
can be overridden (`--set host=mypi`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgekd.config import ConfigError, Strict, _did_you_mean, parse, read_yaml


class DeviceProfile(Strict):
    """How to reach a device, how to run models on it, and its spec figures for estimates."""

    name: str
    description: str = ""
    transport: Literal["local", "ssh", "adb"] = "local"
    host: str | None = None
    """SSH host name, address, or an alias from ~/.ssh/config."""
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    serial: str | None = None
    """ADB serial (`adb devices`), or host:port of a device reached over TCP."""
    identity_file: Path | None = None
    """SSH private key; default the user's agent and ~/.ssh/config."""
    work_dir: str = "/tmp/edgekd"
    python: str = "python3"
    """Python on the device; `none` for devices without one (Android: benchmark_model)."""
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime",
                     "benchmark_model", "trtexec"] = "auto"
    benchmark_binary: Path | None = None
    """benchmark_model on the workstation, pushed to the device when the runtime needs it."""
    threads: int = Field(1, ge=1)
    cpu_mask: str | None = None
    """taskset mask to pin the run to cores, e.g. "f0" for big cores."""
    arch: Literal["x86_64", "aarch64", "armv7l"] = "x86_64"
    ram_mb: int | None = Field(None, ge=1)
    peak_int8_gops: float | None = Field(None, gt=0)
    """Spec figure used only for estimates: int8 multiply-accumulates per second / 1e9."""
    peak_fp32_gflops: float | None = Field(None, gt=0)
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    timeout_s: float = Field(300, gt=0)
    retries: int = Field(2, ge=0)
    """Retries after an infrastructure failure (unreachable, auth, timeout); never after a
    model failure."""
    allow_unknown_host_key: bool = False
    """Accept a host key not yet in known_hosts (trust on first use)."""


def devices_dir() -> Path:
    """Where the shipped device profiles live (override with EDGEKD_DEVICES)."""
    env = os.environ.get("EDGEKD_DEVICES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "devices"


def profile_names() -> list[str]:
    return sorted(p.stem for p in devices_dir().glob("*.yaml"))


def find_profile(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The YAML file for a profile name or path; ConfigError with a suggestion if none."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        for path in (candidate, (relative_to or Path.cwd()) / candidate):
            if path.is_file():
                return path
        raise ConfigError([f"device profile file {name_or_path} not found"])
    path = devices_dir() / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    hint = _did_you_mean(name_or_path, profile_names())
    raise ConfigError([f"unknown device {name_or_path!r}{hint}; known: "
                       f"{', '.join(profile_names())}"])


def load_profile(name_or_path: str, overrides: dict[str, str] | None = None,
                 relative_to: Path | None = None) -> DeviceProfile:
    """Load a device profile and apply `--set key=value` overrides (validated like the file)."""
    path = find_profile(name_or_path, relative_to)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping of keys at the top level"])
    raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if key not in DeviceProfile.model_fields:
            hint = _did_you_mean(key, DeviceProfile.model_fields)
            raise ConfigError([f"--set {key}: unknown device field{hint}"])
        raw[key] = value
    return parse(DeviceProfile, raw, str(path))
