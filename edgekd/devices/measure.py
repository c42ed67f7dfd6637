"""Profile a model file on a device: the one entry point the profile stage and CLI use.

The measurement itself is edgekd/devices/runner.py, run in a fresh process on the device so
load time and peak memory belong to the model alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgekd.devices.profiles import DeviceProfile

RUNNER = Path(__file__).with_name("runner.py")


class DeviceError(Exception):
    """A profiling failure. `kind` keeps infrastructure (unreachable, auth, timeout) apart
    from model failures (the runtime rejected the model or produced bad output)."""

    def __init__(self, message: str, kind: Literal["infrastructure", "model"]):
        super().__init__(message)
        self.kind = kind


@dataclass
class ProfileResult:
    """What a device measured (or, when `measured` is False, what was estimated)."""

    metrics: dict[str, float]
    device: str
    runtime: str
    measured: bool = True
    conditions: dict = field(default_factory=dict)
    attempts: int = 1
    suspect: list[str] = field(default_factory=list)


def profile(model: Path, device: DeviceProfile, *, runs: int = 100, warmup: int = 10,
            threads: int | None = None, data: Path | None = None) -> ProfileResult:
    """Measure `model` on `device` in a fresh process and return its metrics."""
    if device.transport != "local":
        raise DeviceError(f"device {device.name}: transport {device.transport} is not supported "
                          "yet", "infrastructure")
    cmd = [sys.executable, str(RUNNER), str(model), "--runs", str(runs), "--warmup",
           str(warmup), "--threads", str(threads or device.threads), "--runtime", device.runtime]
    if data is not None:
        cmd += ["--data", str(data)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=device.timeout_s)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"device {device.name}: timed out after {device.timeout_s:.0f} s",
                          "infrastructure") from None
    doc = _last_json(proc.stdout)
    if doc is None:
        raise DeviceError(f"device {device.name}: runner printed no result "
                          f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}", "model")
    if not doc.get("ok"):
        raise DeviceError(f"device {device.name}: {doc.get('error')}", "model")
    numbers = {k: float(v) for k, v in doc.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    return ProfileResult(metrics=numbers, device=device.name, runtime=doc["runtime"],
                         conditions=doc.get("conditions", {}))


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
