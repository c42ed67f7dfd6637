"""`edgekd devices check`: say precisely what works on a device and what does not."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgekd.devices.errors import DeviceError
from edgekd.devices.measure import RUNNER, last_json, python_for
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.transports import Transport, open_transport


@dataclass
class Finding:
    """One line of a device check."""

    name: str
    status: str  # ok, FAIL, warn, skip
    detail: str


def reachable(device: DeviceProfile) -> tuple[bool, str]:
    """Whether the device answers and accepts us now (no retries)."""
    transport = open_transport(device)
    try:
        transport.connect()
        return True, "yes"
    except DeviceError as exc:
        return False, f"no: {exc.reason}"
    finally:
        transport.close()


def check_device(device: DeviceProfile, benchmark_binary: Path | None = None) -> list[Finding]:
    """Connect, then check the work dir, architecture, Python, numpy, runtimes and tools."""
    transport = open_transport(device)
    try:
        try:
            transport.connect()
        except DeviceError as exc:
            return [Finding("connect", "FAIL", str(exc))]
        found = [Finding("connect", "ok", f"{device.transport} {device.address}: connected")]
        work = f"{device.work_dir.rstrip('/')}/check-{uuid.uuid4().hex[:8]}"
        try:
            found += _on_device(transport, work, device, benchmark_binary)
        except DeviceError as exc:
            found.append(Finding("connection", "FAIL", str(exc)))
        finally:
            try:
                transport.run(["rm", "-rf", work], device.connect_timeout_s + 20)
            except DeviceError:
                pass
        return found
    finally:
        transport.close()


def _on_device(transport: Transport, work: str, device: DeviceProfile,
               benchmark_binary: Path | None) -> list[Finding]:
    timeout = device.connect_timeout_s + 30
    found = []
    made = transport.run(["mkdir", "-p", work], timeout)
    if made.returncode != 0:
        return [Finding("work dir", "FAIL", f"cannot create {work}: {made.stderr.strip()}")]
    found.append(Finding("work dir", "ok", f"{device.work_dir} writable"))
    machine = transport.run(["uname", "-m"], timeout).stdout.strip()
    arch_ok = machine == device.arch or {machine, device.arch} == {"aarch64", "arm64"}
    found.append(Finding("arch", "ok" if arch_ok else "warn",
                         f"{machine}" + ("" if arch_ok else f" (the profile says {device.arch})")))
    if device.python != "none":
        found += _python(transport, work, device, timeout)
    if device.runtime == "benchmark_model":
        binary = benchmark_binary or device.benchmark_binary
        ok = binary is not None and binary.is_file()
        found.append(Finding("benchmark_model", "ok" if ok else "FAIL",
                             f"{binary}" if ok else "no benchmark_model binary on this "
                             "workstation: set benchmark_binary or pass --benchmark-binary"))
    if device.runtime == "executor_runner" or device.executor_runner is not None:
        ok = device.executor_runner is not None and device.executor_runner.is_file()
        found.append(Finding("executor_runner", "ok" if ok else "FAIL",
                             f"{device.executor_runner}" if ok else "no executor_runner binary "
                             "on this workstation: set executor_runner (or --set "
                             "executor_runner=PATH)"))
    if device.runtime == "trtexec":
        for tool, needed in ((device.trtexec, True), ("tegrastats", False), ("nvpmodel", False)):
            found.append(_tool(transport, tool, needed, timeout))
    return found


def _python(transport: Transport, work: str, device: DeviceProfile,
            timeout: float) -> list[Finding]:
    python = python_for(device)
    version = transport.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                            timeout)
    if version.returncode != 0:
        return [Finding("python", "FAIL", f"{device.python!r} not found or broken "
                        f"(exit {version.returncode}): set python: or --set python=PATH")]
    found = [Finding("python", "ok", f"{device.python} {version.stdout.strip()}")]
    transport.push(RUNNER, f"{work}/runner.py")
    proc = transport.run([python, f"{work}/runner.py", "--list-runtimes"], timeout)
    doc = last_json(proc.stdout) or {}
    if not doc.get("numpy"):
        found.append(Finding("numpy", "FAIL", f"numpy is not installed for {device.python}"))
    else:
        found.append(Finding("numpy", "ok", f"numpy {doc['numpy']}"))
    runtimes = doc.get("runtimes", [])
    found.append(Finding("runtimes", "ok" if runtimes else "FAIL",
                         ", ".join(runtimes) if runtimes else "none of ai_edge_litert, "
                         "tflite_runtime, tensorflow, onnxruntime, executorch is installed"))
    if device.runtime not in ("auto", "benchmark_model", "trtexec", "executor_runner") and \
            device.runtime not in runtimes:
        found.append(Finding("preferred runtime", "FAIL",
                             f"{device.runtime} is not installed ({json.dumps(runtimes)})"))
    return found


def _tool(transport: Transport, tool: str, needed: bool, timeout: float) -> Finding:
    proc = transport.run(["sh", "-c", 'command -v "$1" || { test -x "$1" && echo "$1"; }',
                          "sh", tool], timeout)
    where = proc.stdout.strip()
    if where:
        return Finding(Path(tool).name, "ok", where)
    return Finding(Path(tool).name, "FAIL" if needed else "warn",
                   f"{tool} not found on the device" + ("" if needed else
                                                        " (memory and power not sampled)"))
