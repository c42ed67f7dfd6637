"""Jetson: `trtexec` builds and times a TensorRT engine from the ONNX file while `tegrastats`
samples RAM, temperature and power; both outputs are parsed here.

CPU and GPU share RAM on Jetson, so a process's VmHWM misses GPU allocations: memory comes
from tegrastats' system-wide `RAM used/total` (peak during the run, minus the first sample).
"""

from __future__ import annotations

import re
import shlex

from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.result import ProfileResult, Request
from edgekd.devices.transports import Transport

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
SECTIONS = ("trtexec", "tegrastats", "nvpmodel", "status")
# Rails that carry the whole board's input power, by board generation.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


def parse_trtexec(text: str) -> dict:
    """Latency stats, throughput, load time and warnings from trtexec's summary.

    Returns {"metrics": {...}, "warnings": [...], "passed": bool, "gpu_cv": float | None,
    "engine_build_s": float | None}.
    """
    metrics: dict[str, float] = {}
    warnings, gpu_cv, build_s = [], None, None
    for raw in text.splitlines():
        line = re.sub(r"^(\[[^\]]*\] )*?\[[IWE]\] ", "", raw.strip())
        level = re.search(r"\[([IWE])\] ", raw)
        if line.startswith("Latency:"):
            metrics.update(_stats(line, "latency_ms"))
        elif line.startswith("Throughput:"):
            metrics["throughput_qps"] = float(re.findall(NUMBER, line)[0])
        elif line.startswith("Engine deserialized in"):
            metrics["load_ms"] = float(re.findall(NUMBER, line)[0]) * 1e3
        elif line.startswith("Engine built in"):
            build_s = float(re.findall(NUMBER, line)[0])
        elif level and level.group(1) == "W" and line.strip("* "):
            warnings.append(line.strip("* "))
            cv = re.search(rf"coefficient of variance = ({NUMBER})%", line)
            if cv:
                gpu_cv = float(cv.group(1)) / 100
    return {"metrics": metrics, "warnings": warnings, "gpu_cv": gpu_cv,
            "engine_build_s": build_s, "passed": "&&&& PASSED" in text}


def _stats(line: str, prefix: str) -> dict[str, float]:
    """`min = 1.1 ms, max = ..., mean = ..., median = ..., percentile(90%) = ...`."""
    out = {}
    for name, value, unit in re.findall(rf"(min|max|mean|median|percentile\(\d+(?:\.\d+)?%\))"
                                        rf" = ({NUMBER}) ?(ms|us|s)\b", line):
        ms = float(value) * {"ms": 1.0, "us": 1e-3, "s": 1e3}[unit]
        if name.startswith("percentile"):
            pct = float(name[len("percentile("):-2])
            key = f"p{pct:g}".replace(".", "_")
        else:
            key = {"median": "p50"}.get(name, name)
        out[f"{prefix}_{key}"] = ms
    return out


def parse_tegrastats(text: str) -> dict:
    """RAM (MB), power (mW, board input rail) and temperatures (C) per tegrastats sample."""
    samples = []
    for line in text.splitlines():
        ram = re.search(r"\bRAM (\d+)/(\d+)MB", line)
        if not ram:
            continue
        sample: dict = {"ram_used_mb": float(ram.group(1)), "ram_total_mb": float(ram.group(2))}
        for rail in INPUT_RAILS:
            power = re.search(rf"\b{rail} (\d+)(?:mW)?/(\d+)(?:mW)?", line)
            if power:
                sample["power_mw"] = float(power.group(1))
                break
        # Junction temperature where reported; PMIC reads a constant 100C on older boards and
        # switched-off sensors read -256C, so neither counts.
        temps = {name.lower(): float(t) for name, t in re.findall(rf"\b(\w+)@({NUMBER})C\b", line)}
        usable = [t for name, t in temps.items() if name != "pmic" and -40 < t < 150]
        if "tj" in temps or usable:
            sample["temperature_c"] = temps.get("tj", max(usable, default=0.0))
        samples.append(sample)
    return {"samples": samples}


def tegrastats_metrics(samples: list[dict]) -> dict[str, float]:
    if not samples:
        return {}
    used = [s["ram_used_mb"] for s in samples]
    out = {"peak_memory_mb": max(used), "baseline_memory_mb": used[0],
           "model_memory_mb": max(used) - used[0]}
    power = [s["power_mw"] for s in samples if "power_mw" in s]
    if power:
        out.update(power_mw_mean=sum(power) / len(power), power_mw_max=max(power))
    return out


def is_quantized(model_bytes: bytes) -> bool:
    """A QDQ / QOperator ONNX model (op types are stored as plain strings in the protobuf)."""
    return any(op in model_bytes for op in (b"QuantizeLinear", b"QLinearConv", b"ConvInteger"))


def script(device: DeviceProfile, work: str, request: Request, int8: bool) -> str:
    """The shell script run on the Jetson; every path and name in it is quoted."""
    q = shlex.quote
    flags = ["--fp16", "--int8"] if int8 else ["--fp16"]
    trt = [device.trtexec, f"--onnx={work}/model.onnx", f"--saveEngine={work}/model.plan",
           *flags, "--warmUp=500", "--duration=0", f"--iterations={request.runs}",
           "--percentile=90,95,99"]
    log = f"{work}/trtexec.log"
    return "\n".join([
        f"cd {q(work)} || exit 1",
        "ts=",
        "if command -v tegrastats >/dev/null 2>&1; then",
        f"  tegrastats --interval 100 > {q(work + '/tegrastats.log')} 2>&1 & ts=$!",
        "fi",
        "sleep 0.3",  # a first tegrastats sample before the engine is built: the baseline
        f"{shlex.join(trt)} > {q(log)} 2>&1",
        "rc=$?",
        '[ -n "$ts" ] && kill "$ts" 2>/dev/null',
        f"echo '@@trtexec'; cat {q(log)}",
        f"echo '@@tegrastats'; cat {q(work + '/tegrastats.log')} 2>/dev/null",
        "echo '@@nvpmodel'; nvpmodel -q 2>/dev/null",
        'echo "@@status $rc"',
    ])


def split_sections(text: str) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current, _, rest = line[2:].partition(" ")
            parts[current] = [rest] if rest else []
        elif current:
            parts[current].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def run_trtexec(transport: Transport, work: str, request: Request,
                device: DeviceProfile) -> ProfileResult:
    """Build and time an engine with trtexec, sampling tegrastats meanwhile."""
    transport.push(request.model, f"{work}/model.onnx")
    int8 = is_quantized(request.model.read_bytes())
    proc = transport.run(["sh", "-c", script(device, work, request, int8)], device.timeout_s)
    parts = split_sections(proc.stdout)
    status = parts.get("status", "").strip()
    log = parts.get("trtexec", "")
    if "not found" in log and device.trtexec in log or status == "127":
        raise DeviceError(f"device {device.name}: trtexec not found at {device.trtexec!r} (set "
                          "trtexec: in the profile, e.g. /usr/src/tensorrt/bin/trtexec)",
                          "infrastructure", "setup")
    parsed = parse_trtexec(log)
    if status != "0" or not parsed["passed"] or "latency_ms_mean" not in parsed["metrics"]:
        # The first errors are the cause; the later ones say what gave up because of it.
        errors = [re.sub(r"^(\[[^\]]*\] )+", "", ln) for ln in log.splitlines() if "[E]" in ln]
        raise DeviceError(f"device {device.name}: trtexec failed (exit {status or '?'}): "
                          + ("; ".join(errors[:2]) or log.strip()[-300:]), "model")
    samples = parse_tegrastats(parts.get("tegrastats", ""))["samples"]
    metrics = {**parsed["metrics"], **tegrastats_metrics(samples)}
    conditions = {"tool": "trtexec", "precision": "int8+fp16" if int8 else "fp16",
                  "runs": request.runs, "warnings": parsed["warnings"],
                  "engine_build_s": parsed["engine_build_s"],
                  "memory_source": "tegrastats RAM used (system-wide, CPU and GPU)"
                  if samples else "not measured (tegrastats not found)"}
    mode = re.search(r"NV Power Mode: (.+)", parts.get("nvpmodel", ""))
    if mode:
        conditions["power_mode"] = mode.group(1).strip()
    temps = [s["temperature_c"] for s in samples if "temperature_c" in s]
    if temps:
        conditions.update(temperature_c_before=temps[0], temperature_c_after=temps[-1])
    suspect = []
    if parsed["gpu_cv"] is not None and parsed["gpu_cv"] > device.max_cv:
        suspect.append(f"trtexec: GPU compute time coefficient of variance "
                       f"{parsed['gpu_cv']:.0%} is above {device.max_cv:.0%}")
    return ProfileResult(metrics=metrics, device=device.name, runtime="tensorrt",
                         conditions=conditions, suspect=suspect)
