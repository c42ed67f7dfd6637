"""ExecuTorch's `executor_runner`: push it with the .pte file, run it, parse what it prints.

Used on Android and other devices without Python (the XNNPACK build of
examples/portable/executor_runner, built with the NDK). Its log lines go to stderr in the
posix PAL's format, `I 00:00:00.012345 executorch:executor_runner.cpp:289] <message>` (builds
with the android PAL send them to logcat instead, where nothing can be parsed: build with
-DEXECUTORCH_PAL_DEFAULT=posix). From them:

- `Model loaded in 1.234 ms.`: load time (program parse and method load; newer builds);
- `Iteration 3 of 120: 0.456 ms`: each execution timed by the runtime's own clock (newer
  builds), so the first is the first inference, and the warm-up ones are dropped before the
  percentiles are taken;
- `Model executed successfully 120 time(s) in 54.7 ms.`: the total, all a build without the
  per-iteration lines gives (then only the mean is known, and no percentiles are invented).

It prints no memory figures; those metrics stay absent. It feeds all-ones inputs, so accuracy
is not measured. Per-op timings need a build with event tracing
(-DEXECUTORCH_ENABLE_EVENT_TRACER=ON), which adds the `--etdump_path` flag; other builds
refuse that flag, and the op profile is then reported unavailable.
"""

from __future__ import annotations

import re
import shlex
import statistics
import tempfile
from pathlib import Path

from edgekd.devices.benchmark_model import NUMBER, hottest, push_tool, thermal_command
from edgekd.devices.errors import DeviceError
from edgekd.devices.profiles import DeviceProfile
from edgekd.devices.result import ProfileResult, Request
from edgekd.devices.transports import Transport

_LOG = re.compile(r"^[DIEF] \d+:\d\d:\d\d\.\d+ executorch:[^\]]*\] (.*)$")
UNTRACED = ("executor_runner was built without event tracing: rebuild it with "
            "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON for per-op timings")


def messages(text: str) -> list[str]:
    """The message part of each ExecuTorch log line (other lines are left out)."""
    found = (_LOG.match(line.strip()) for line in text.splitlines())
    return [m.group(1) for m in found if m]


def parse_executor_runner(text: str, warmup: int = 0) -> dict[str, float]:
    """Metrics from executor_runner's output; empty if it printed no execution timings.

    `warmup`: how many of the first executions were warm-up (left out of the statistics; the
    first of all is `first_inference_ms`)."""
    out: dict[str, float] = {}
    iterations: dict[int, float] = {}
    total = None
    for message in messages(text):
        if found := re.fullmatch(rf"Model loaded in ({NUMBER}) ms\.", message):
            out["load_ms"] = float(found.group(1))
        elif found := re.fullmatch(rf"Iteration (\d+) of \d+: ({NUMBER}) ms", message):
            iterations[int(found.group(1))] = float(found.group(2))
        elif found := re.fullmatch(rf"Model executed successfully (\d+) time\(s\) in "
                                   rf"({NUMBER}) ms\.", message):
            total = (int(found.group(1)), float(found.group(2)))
    if iterations:
        times = [iterations[i] for i in sorted(iterations)]
        out["first_inference_ms"] = times[0]
        out.update(summarize(times[warmup:] if len(times) > warmup else times))
    elif total is not None and total[0] > 0:
        out.update({"latency_ms_mean": total[1] / total[0], "runs": float(total[0])})
    return out if "latency_ms_mean" in out else {}


def summarize(times: list[float]) -> dict[str, float]:
    """The statistics edgekd's runner reports, over the tool's own per-execution timings."""
    ordered = sorted(times)

    def percentile(q: float) -> float:  # linear interpolation, as numpy's default
        k = (len(ordered) - 1) * q
        low = int(k)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (k - low)

    return {"latency_ms_mean": statistics.fmean(times), "latency_ms_p50": percentile(0.5),
            "latency_ms_p90": percentile(0.9), "latency_ms_p99": percentile(0.99),
            "latency_ms_std": statistics.pstdev(times), "latency_ms_min": ordered[0],
            "latency_ms_max": ordered[-1], "runs": float(len(times))}


def errors_in(text: str) -> list[str]:
    """The lines executor_runner (or gflags, or the shell) prints when it fails."""
    lines = []
    for line in text.splitlines():
        found = _LOG.match(line.strip())
        if found and line.strip()[0] in "EF":
            lines.append(found.group(1))
        elif re.match(r"^\s*(ERROR:|Aborted|Segmentation|.*not found|.*Permission denied)",
                      line):
            lines.append(line.strip())
    return lines


def run_executor_runner(transport: Transport, work: str, request: Request,
                        device: DeviceProfile) -> ProfileResult:
    """Push executor_runner and the .pte, run warm-up + timed executions pinned to
    `cpu_mask` if set, parse them; with `request.op_profile`, a second run writes an ETDump
    that ExecuTorch's Inspector turns into a per-op CSV (or the profile is said unavailable)."""
    tool, model = push_tool(transport, work, request, device, request.executor_runner,
                            "executor_runner", "set executor_runner in the profile or --set "
                            "executor_runner=PATH (ExecuTorch's executor_runner built with "
                            "XNNPACK for the device's ABI)")
    # Only flags every ExecuTorch 1.x build takes (--print_output is newer): it prints the
    # outputs' first elements, which the parser skips.
    argv = [tool, f"--model_path={model}", f"--num_executions={request.warmup + request.runs}",
            f"--cpu_threads={request.threads}"]
    before = hottest(transport.run(thermal_command(), device.connect_timeout_s + 20).stdout)
    proc = _run(transport, argv, device)
    after = hottest(transport.run(thermal_command(), device.connect_timeout_s + 20).stdout)
    text = proc.stdout + proc.stderr
    metrics = parse_executor_runner(text, warmup=request.warmup)
    if not metrics or proc.returncode != 0:
        detail = "; ".join(errors_in(text)[-3:]) or text.strip()[-300:]
        raise DeviceError(f"device {device.name}: executor_runner failed "
                          f"(exit {proc.returncode}): {detail}", "model")
    conditions = {"tool": "executor_runner", "runs": metrics.pop("runs", request.runs),
                  "cpu_mask": device.cpu_mask, "memory": "not reported by executor_runner"}
    if "latency_ms_p50" not in metrics:
        conditions["percentiles"] = "not reported by this executor_runner build"
    if request.op_profile is not None:
        conditions["op_profile"] = _op_profile(transport, work, argv, request, device)
    for when, value in (("before", before), ("after", after)):
        if value is not None:
            conditions[f"temperature_c_{when}"] = value
    return ProfileResult(metrics=metrics, device=device.name, runtime="executor_runner",
                         conditions=conditions)


def _run(transport: Transport, argv: list[str], device: DeviceProfile):
    """Run `argv` (the pushed tool first) in its work dir, pinned to `cpu_mask` if set. A
    build with event tracing writes `model.etdump` into the working directory even without
    --etdump_path, and aborts if it cannot (adb shell starts in /); the work dir is writable
    and removed afterwards. The tool logs to stderr; merged so its lines stay in order."""
    pinned = ["taskset", device.cpu_mask, *argv] if device.cpu_mask else argv
    work = argv[0].rsplit("/", 1)[0]
    script = (f"cd {shlex.quote(work)} && chmod 755 {shlex.quote(argv[0])} && "
              f"{shlex.join(pinned)} 2>&1")
    return transport.run(["sh", "-c", script], device.timeout_s)


def _op_profile(transport: Transport, work: str, argv: list[str], request: Request,
                device: DeviceProfile) -> str:
    """Run again with `--etdump_path` and turn the ETDump into request.op_profile; returns
    what happened, in words (never a guess)."""
    etdump = f"{work}/model.etdump"
    traced = [a for a in argv if not a.startswith("--num_executions=")]
    traced += ["--num_executions=20", f"--etdump_path={etdump}"]
    proc = _run(transport, traced, device)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 or "ETDump written to file" not in text:
        if "etdump_path" in text:  # gflags: unknown command line flag 'etdump_path'
            return f"unavailable: {UNTRACED}"
        return "unavailable: " + ("; ".join(errors_in(text)[-2:]) or "no ETDump written")
    return pull_op_profile(transport, etdump, request.op_profile)


def pull_op_profile(transport: Transport, etdump: str, out: Path) -> str:
    """Pull an ETDump from the device and write `out` (per-op CSV) from it with ExecuTorch's
    Inspector; what happened, in words."""
    try:
        from edgekd.export.executorch import OpProfileUnavailable, op_profile_csv
    except ImportError:
        return ("unavailable: reading an ETDump needs executorch on this host: "
                "pip install 'edgekd[executorch]'")
    with tempfile.TemporaryDirectory(prefix="edgekd-etdump-") as tmp:
        local = Path(tmp) / "model.etdump"
        transport.pull(etdump, local)
        try:
            rows = op_profile_csv(local, out)
        except OpProfileUnavailable as exc:
            return f"unavailable: {exc}"
    return (f"{rows} ops from ETDump ({out}); 20 traced runs, the cold first one left out; "
            "XNNPACK times whole microseconds, so shorter ops read 0")
