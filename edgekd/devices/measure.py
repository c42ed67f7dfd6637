"""Profile a model file on a device: the one entry point the profile stage and CLI use.

The measurement itself runs on the device in a fresh process, so load time and peak memory
belong to the model alone: edgekd/devices/runner.py where the device has Python, TFLite's
`benchmark_model` on Android without Python, `trtexec` on Jetson. Infrastructure failures are
retried a bounded number of times; model failures never are.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Literal

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.result import ProfileResult, Request, pick_metrics, suspect_reasons
from edgekd.devices.transports import Transport, open_transport
from edgekd.export.formats import SUFFIXES, suffix_list

__all__ = ["DeviceError", "ProfileResult", "profile", "measure_once"]

RUNNER = Path(__file__).with_name("runner.py")
TOOLS = ("benchmark_model", "trtexec", "executor_runner")
"""Runtimes that are vendor binaries, not Python packages the runner imports."""


def profile(model: Path, device: DeviceProfile, *, runs: int = 100, warmup: int = 10,
            threads: int | None = None, data: Path | None = None,
            on_unreachable: Literal["fail", "estimate"] = "fail",
            estimate_inputs: dict | None = None, benchmark_binary: Path | None = None,
            executor_runner: Path | None = None,
            op_profile: Path | None = None) -> ProfileResult:
    """Measure `model` (.tflite, .onnx or .pte) on `device` in a fresh process and return its
    metrics.

    runs / warmup: timed and untimed inferences; threads: default the profile's; data: an .npz
    with `x` and `y` for on-device accuracy.
    on_unreachable: "fail" raises the DeviceError once the retries are spent; "estimate"
    returns an estimate instead (`measured=False`, runtime "estimate") from `estimate_inputs`
    ({"macs", "params", "activation_bytes", optional "precision": "int8" | "fp32"}; counted
    from the file itself for .onnx when not given) and the device's spec figures.
    benchmark_binary: the TFLite benchmark_model to push (default the profile's).
    executor_runner: ExecuTorch's executor_runner to push (default the profile's).
    op_profile: where to save a per-op CSV: benchmark_model's, or for a .pte file the ETDump
    ExecuTorch's Inspector reads (`conditions["op_profile"]` says when the runtime cannot).

    Raises DeviceError: kind "infrastructure" (reason unreachable, auth, host_key, offline,
    disconnected, timeout, setup) after `device.retries` retries, or kind "model" at once.
    `error.attempts` says how many tries were made.
    """
    model = Path(model)
    if model.suffix not in SUFFIXES:
        raise DeviceError(f"{model}: expected a {suffix_list()} file", "model")
    if not model.is_file():
        raise DeviceError(f"{model}: no such file", "model")
    request = Request(model=model, runs=runs, warmup=warmup, threads=threads or device.threads,
                      data=Path(data) if data else None,
                      benchmark_binary=benchmark_binary or device.benchmark_binary,
                      executor_runner=executor_runner or device.executor_runner,
                      op_profile=op_profile)
    try:
        return with_retries(lambda: measure_once(request, device), device)
    except DeviceError as exc:
        if exc.kind != "infrastructure" or on_unreachable != "estimate":
            raise
        from edgekd.devices.estimate import estimate

        result = estimate(model, device, estimate_inputs, why=str(exc),
                          threads=request.threads)
        result.attempts = exc.attempts
        return result


def with_retries(attempt, device: DeviceProfile) -> ProfileResult:
    """Call `attempt` until it succeeds, a model failure, or `device.retries` retries of
    transient infrastructure failures; attempts are counted on the result or the error."""
    tries = 0
    while True:
        tries += 1
        try:
            result = attempt()
        except DeviceError as exc:
            exc.attempts = tries
            if not exc.retriable or tries > device.retries:
                raise
            time.sleep(device.retry_delay_s)
            continue
        result.attempts = tries
        return result


def measure_once(request: Request, device: DeviceProfile) -> ProfileResult:
    """One measurement: connect, make a fresh work dir, run, always remove the work dir."""
    transport = open_transport(device)
    try:
        transport.connect()
        work = f"{device.work_dir.rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
        _check(transport.run(["mkdir", "-p", work], device.connect_timeout_s + 20),
               f"cannot create {work} on the device")
        try:
            result = _method(request, device)(transport, work, request, device)
        finally:
            _remove(transport, work, device)
    finally:
        transport.close()
    result.conditions.update({"threads": request.threads, "transport": device.transport,
                              "address": device.address})
    result.suspect += suspect_reasons(result.metrics, result.conditions, device.max_cv,
                                      device.max_temperature_c)
    return result


def _method(request: Request, device: DeviceProfile):
    """The measuring tool for this model on this device."""
    suffix = request.model.suffix
    if device.runtime == "benchmark_model" and suffix == ".tflite":
        from edgekd.devices.benchmark_model import run_benchmark_model

        return run_benchmark_model
    if device.runtime == "trtexec" and suffix == ".onnx":
        from edgekd.devices.trtexec import run_trtexec

        return run_trtexec
    if suffix == ".pte" and (device.runtime == "executor_runner" or device.python == "none"):
        from edgekd.devices.executor_runner import run_executor_runner

        return run_executor_runner
    if device.python == "none":
        tools = {"benchmark_model": ".tflite", "trtexec": ".onnx", "executor_runner": ".pte"}
        can = tools.get(device.runtime)
        raise DeviceError(f"device {device.name} has no Python (python: none) and its runtime "
                          f"{device.runtime} " + (f"runs {can} files only" if can else
                                                  "needs Python"), "model")
    return run_runner


def run_runner(transport: Transport, work: str, request: Request,
               device: DeviceProfile) -> ProfileResult:
    """Push runner.py, the model and the data; run the runner; read its JSON."""
    model = f"{work}/model{request.model.suffix}"
    transport.push(RUNNER, f"{work}/runner.py")
    transport.push(request.model, model)
    runtime = device.runtime if device.runtime not in TOOLS else "auto"
    argv = [python_for(device), f"{work}/runner.py", model, "--runs", str(request.runs),
            "--warmup", str(request.warmup), "--threads", str(request.threads),
            "--runtime", runtime]
    if request.data is not None:
        transport.push(request.data, f"{work}/data.npz")
        argv += ["--data", f"{work}/data.npz"]
    etdump = request.op_profile is not None and request.model.suffix == ".pte"
    if etdump:
        argv += ["--etdump", f"{work}/model.etdump"]
    if device.cpu_mask:
        argv = ["taskset", device.cpu_mask, *argv]
    proc = transport.run(argv, device.timeout_s)
    doc = last_json(proc.stdout)
    if doc is None:
        raise _no_result(proc, device)
    if not doc.get("ok"):
        if doc.get("kind") == "input":  # the data given does not fit the model
            raise DeviceError(f"--data: {doc.get('error')}", "model", "input")
        kind = "model" if doc.get("kind") == "model" else "infrastructure"
        raise DeviceError(f"{doc.get('error')}{_missing_ops(proc)}", kind,
                          "model" if kind == "model" else "setup")
    conditions = runner_conditions(doc)
    if etdump:
        conditions["op_profile"] = _op_profile(transport, f"{work}/model.etdump", doc,
                                               request.op_profile)
    elif request.op_profile is not None:
        conditions["op_profile"] = (
            f"unavailable: per-op timings come from ExecuTorch's ETDump (.pte) and from "
            f"benchmark_model (.tflite on a device with runtime: benchmark_model), not from "
            f"{doc['runtime']}'s Python API; nothing was written to {request.op_profile}")
    return ProfileResult(metrics=pick_metrics(doc), device=device.name, runtime=doc["runtime"],
                         conditions=conditions)


def _op_profile(transport: Transport, etdump: str, doc: dict, out: Path) -> str:
    """The runner's ETDump as a per-op CSV at `out`, or why there is none, in words."""
    if doc.get("etdump_error"):
        return f"unavailable: {doc['etdump_error']}"
    from edgekd.devices.executor_runner import pull_op_profile

    return pull_op_profile(transport, etdump, out)


def python_for(device: DeviceProfile) -> str:
    """The device's Python; locally, `python3` means the Python running edgekd."""
    if device.transport == "local" and device.python == "python3":
        return sys.executable
    return device.python


def runner_conditions(doc: dict) -> dict:
    """The runner's before/after thermal readings and system facts, flattened."""
    conditions = {k: doc[k] for k in ("python", "machine", "bits", "cpu_count", "board",
                                       "governor", "numpy", "runtime_version", "runs",
                                       "samples") if k in doc}
    for when in ("before", "after"):
        state = doc.get("conditions", {}).get(when, {})
        if "temperature_c" in state:
            conditions[f"temperature_c_{when}"] = state["temperature_c"]
        if "throttled" in state:
            conditions[f"throttled_{when}"] = state["throttled"]
    return conditions


def _missing_ops(proc) -> str:
    """The ops ExecuTorch's log names as having no kernel in this runtime, as "; the runtime
    has no kernel for aten::sort.values" ("" when none): its exception gives a number only."""
    names = re.findall(r"Missing operator: \[\d+\] (\S+)", proc.stderr or "")
    return f"; the runtime has no kernel for {', '.join(dict.fromkeys(names))}" if names else ""


def _no_result(proc, device: DeviceProfile) -> DeviceError:
    text = (proc.stderr or proc.stdout).strip()
    if proc.returncode == 127 or "not found" in text and device.python in text:
        return DeviceError(f"device {device.name}: Python {device.python!r} not found on the "
                           "device (set python: in the profile or --set python=PATH)",
                           "infrastructure", "setup")
    return DeviceError(f"device {device.name}: the runner printed no result (exit "
                       f"{proc.returncode}): {text[-500:]}", "model")


def _check(proc, what: str) -> None:
    if proc.returncode != 0:
        raise DeviceError(f"{what}: {proc.stderr.strip()[-300:]}", "infrastructure", "setup")


def _remove(transport: Transport, work: str, device: DeviceProfile) -> None:
    """Remove the run's work dir; a lost connection must not hide the original error."""
    try:
        transport.run(["rm", "-rf", work], device.connect_timeout_s + 20)
    except DeviceError:
        pass


def last_json(stdout: str) -> dict | None:
    """The last line of `stdout` that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
