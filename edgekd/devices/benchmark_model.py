"""TFLite `benchmark_model`: push it with the model, run it, parse what it prints.

Used on Android and other devices without Python. Its output (stderr, `INFO: ` prefixed in
newer builds, numbers sometimes as `3.51e+06`) gives mean, min, max and std of the timed runs,
init and first-inference time and memory footprint, but no percentiles: those metrics stay
absent rather than being made up.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.result import ProfileResult, Request
from edgekd.devices.transports import Transport

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_benchmark_model(text: str) -> dict[str, float]:
    """Metrics from benchmark_model output; empty if it printed no inference timings."""
    lines = [re.sub(r"^(INFO|WARNING|ERROR): ", "", line.strip()) for line in text.splitlines()]
    out: dict[str, float] = {}
    for line in lines:
        if line.startswith("Inference timings in us:"):
            pairs = re.findall(rf"([A-Za-z][A-Za-z ()]*?): ({NUMBER})", line.split(":", 1)[1])
            us = {k.strip(): float(v) for k, v in pairs}
            out.update(_ms(us, {"Init": "load_ms", "First inference": "first_inference_ms",
                                "Inference (avg)": "latency_ms_mean"}))
        elif line.startswith("count="):
            stats = {k: float(v) for k, v in re.findall(rf"(\w+)=({NUMBER})", line)}
            timed = _ms(stats, {"avg": "latency_ms_mean", "min": "latency_ms_min",
                                "max": "latency_ms_max", "std": "latency_ms_std"})
            timed["runs"] = stats.get("count", 0.0)
            out.update(timed)  # the last count= line is the timed runs, earlier ones warm-up
        elif line.startswith(("Memory footprint delta from the start of the tool (MB):",
                              "Peak memory footprint (MB):")):
            # The same figure under two names: older builds called the growth of the
            # tool's max RSS since its start "Peak memory footprint"; 0 where not supported.
            delta = dict(re.findall(rf"(\w+)=({NUMBER})", line))
            if float(delta.get("overall", 0)) > 0:
                out["model_memory_mb"] = float(delta["overall"])
        elif line.startswith("Overall peak memory footprint (MB) via periodic monitoring:"):
            out["peak_memory_mb"] = float(line.rsplit(":", 1)[1])
    if "load_ms" not in out and "latency_ms_min" not in out:
        return {}
    return out


def _ms(values: dict[str, float], names: dict[str, str]) -> dict[str, float]:
    return {metric: values[key] / 1e3 for key, metric in names.items() if key in values}


def errors_in(text: str) -> list[str]:
    """The lines benchmark_model prints when it fails."""
    return [line.strip() for line in text.splitlines()
            if re.match(r"^\s*(ERROR:|E\d{4} |Failed|Could not|Aborted|Segmentation)", line)]


def thermal_command() -> list[str]:
    """A command printing every thermal zone in millidegrees (Android and Linux)."""
    return ["sh", "-c", "cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null; true"]


def hottest(text: str) -> float | None:
    """Highest plausible temperature (deg C) in millidegree readings."""
    temps = [int(t) / 1000 for t in re.findall(r"^-?\d+$", text, re.M)]
    temps = [t for t in temps if 0 < t < 150]
    return max(temps) if temps else None


def push_tool(transport: Transport, work: str, request: Request, device: DeviceProfile,
              binary: Path | None, name: str, how: str) -> tuple[str, str]:
    """Push a vendor tool (`binary`, run on the device as `work/name`) and the model beside
    it; returns their paths there. Raises DeviceError (setup) saying `how` to give the tool
    when it is missing."""
    if binary is None or not binary.is_file():
        where = f"{binary} does not exist" if binary else f"no {name} binary given"
        raise DeviceError(f"device {device.name}: {where}: {how}", "infrastructure", "setup")
    tool, model = f"{work}/{name}", f"{work}/model{request.model.suffix}"
    transport.push(binary, tool)
    transport.push(request.model, model)
    return tool, model


def run_benchmark_model(transport: Transport, work: str, request: Request,
                        device: DeviceProfile) -> ProfileResult:
    """Push benchmark_model and the model, run it pinned to `cpu_mask` if set, parse it."""
    tool, model = push_tool(transport, work, request, device, request.benchmark_binary,
                            "benchmark_model", "set benchmark_binary in the profile or pass "
                            "--benchmark-binary (download it from the TFLite benchmark tools "
                            "page for the device's ABI)")
    argv = [tool, f"--graph={model}", f"--num_threads={request.threads}",
            f"--num_runs={request.runs}", f"--warmup_runs={max(request.warmup, 1)}",
            "--report_peak_memory_footprint=true"]
    if request.op_profile is not None:
        argv += ["--enable_op_profiling=true", f"--profiling_output_csv_file={work}/ops.csv"]
    if device.cpu_mask:
        argv = ["taskset", device.cpu_mask, *argv]
    before = hottest(transport.run(thermal_command(), device.connect_timeout_s + 20).stdout)
    # The tool logs to stderr; merged so its lines stay in order.
    script = f"chmod 755 {shlex.quote(tool)} && {shlex.join(argv)} 2>&1"
    proc = transport.run(["sh", "-c", script], device.timeout_s)
    after = hottest(transport.run(thermal_command(), device.connect_timeout_s + 20).stdout)
    text = proc.stdout + proc.stderr
    metrics = parse_benchmark_model(text)
    if not metrics or proc.returncode != 0:
        detail = "; ".join(errors_in(text)[-3:]) or text.strip()[-300:]
        raise DeviceError(f"device {device.name}: benchmark_model failed "
                          f"(exit {proc.returncode}): {detail}", "model")
    if request.op_profile is not None:
        transport.pull(f"{work}/ops.csv", request.op_profile)
    conditions = {"tool": "benchmark_model", "runs": metrics.pop("runs", request.runs),
                  "percentiles": "not reported by benchmark_model",
                  "cpu_mask": device.cpu_mask}
    if before is not None:
        conditions["temperature_c_before"] = before
    if after is not None:
        conditions["temperature_c_after"] = after
    return ProfileResult(metrics=metrics, device=device.name, runtime="benchmark_model",
                         conditions=conditions)
