"""What a profiling run asked for (`Request`) and what it gives back (`ProfileResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# The metric names the pipeline report and `--json` use.
METRICS = (
    "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
    "latency_ms_std", "latency_ms_min", "latency_ms_max", "load_ms", "first_inference_ms",
    "peak_memory_mb", "baseline_memory_mb", "model_memory_mb", "accuracy",
    "throughput_qps", "power_mw_mean", "power_mw_max",
)


@dataclass(frozen=True)
class Request:
    """One measurement as the caller asked for it."""

    model: Path
    runs: int = 100
    warmup: int = 10
    threads: int = 1
    data: Path | None = None
    """.npz with `x` and `y`; accuracy is measured on the device when given."""
    benchmark_binary: Path | None = None
    executor_runner: Path | None = None
    """ExecuTorch's executor_runner to push (.pte files on devices that use it)."""
    op_profile: Path | None = None
    """Where to save the per-op profile CSV (benchmark_model's; for .pte files, ExecuTorch's
    ETDump read by its Inspector)."""


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

    def to_json(self) -> dict:
        """The document `edgekd profile --json` writes."""
        doc = asdict(self)
        doc["source"] = "measured" if self.measured else "estimated"
        return doc


def pick_metrics(doc: dict) -> dict[str, float]:
    """The known metrics in a runner or parser document, as floats."""
    return {k: float(doc[k]) for k in METRICS if isinstance(doc.get(k), int | float)
            and not isinstance(doc.get(k), bool)}


def suspect_reasons(metrics: dict[str, float], conditions: dict, max_cv: float,
                    max_temperature_c: float) -> list[str]:
    """Why a measurement should not be trusted: unstable timings, throttling, heat."""
    reasons = []
    mean, std = metrics.get("latency_ms_mean"), metrics.get("latency_ms_std")
    if mean and std is not None and std / mean > max_cv:
        reasons.append(f"latency coefficient of variation {_percent(std / mean, max_cv)} is "
                       f"above {_percent(max_cv, std / mean)}")
    before, after = conditions.get("throttled_before"), conditions.get("throttled_after")
    if before is not None and after is not None and before != after:
        reasons.append(f"throttle state changed during the run ({before} -> {after})")
    now = after if after is not None else before
    if now is not None and _throttled_now(now):
        reasons.append(f"device throttled or under-voltage during the run ({now})")
    temps = [conditions.get(k) for k in ("temperature_c_before", "temperature_c_after")]
    hottest = max((t for t in temps if t is not None), default=None)
    if hottest is not None and hottest > max_temperature_c:
        reasons.append(f"temperature {hottest:.1f} C is above {max_temperature_c:.0f} C")
    return reasons


def _percent(value: float, other: float) -> str:
    """`value` as a percentage with as many decimals (up to 3) as it takes to tell it from
    `other`: 25.3 % against 25 %, not "25 % is above 25 %"."""
    digits = next((d for d in range(3) if round(value * 100, d) != round(other * 100, d)), 3)
    return f"{value * 100:.{digits}f}%"


def _throttled_now(flags: str) -> bool:
    """vcgencmd get_throttled bits 0-3: under-voltage, frequency capped, throttled, soft
    temperature limit, right now (bits 16-19 say the same since boot and are ignored)."""
    try:
        return int(str(flags), 16) & 0xF != 0
    except ValueError:
        return False
