"""Budgets: human units ("1 GB", "100 ms") and the pure gate check.

`check()` turns a stage's metrics and its budget into a list of `Check`s; it does no I/O, so a
gate can be re-evaluated from a report alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekd.config import Budget

_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_NUMBER_UNIT = re.compile(r"^\s*([<>]=?)?\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-zA-Z]*)\s*$")


def _split(text: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(text)
    if not match:
        raise ValueError(f"cannot read {text!r}: expected a number and a unit, like '2 MB'")
    return float(match.group(2)), match.group(3).lower()


def parse_size(value: str | int | float) -> int:
    """Bytes from "2 MB", "1.5GiB", "<1 GB" or a plain number of bytes."""
    if isinstance(value, int | float):
        return int(value)
    number, unit = _split(value)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} "
                         "(use B, KB, MB, GB, KiB, MiB, GiB)")
    return int(number * _SIZE_UNITS[unit])


def parse_duration_ms(value: str | int | float) -> float:
    """Milliseconds from "100 ms", "0.5 s", "<250us" or a plain number of milliseconds."""
    if isinstance(value, int | float):
        return float(value)
    number, unit = _split(value)
    unit = unit or "ms"
    if unit not in _TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r} in {value!r} (use us, ms, s)")
    return number * _TIME_UNITS[unit]


@dataclass(frozen=True)
class Check:
    """One budget line compared with one measured (or estimated) value."""

    name: str
    value: float | None
    limit: float
    passed: bool
    measured_on: str = "host"
    estimated: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        op = ">=" if self.name.startswith("min_") or ".min_" in self.name else "<="
        shown = "missing" if self.value is None else f"{self.value:.4g}"
        how = "estimated" if self.estimated else "measured"
        state = "ok  " if self.passed else "FAIL"
        return (f"{state} {self.name}: {shown} (limit {op} {self.limit:.4g}, "
                f"{how} on {self.measured_on})")


def _compare(name: str, value: float | None, limit: float, at_least: bool, where: str,
             estimated: bool) -> Check:
    passed = value is not None and (value >= limit if at_least else value <= limit)
    return Check(name, value, limit, passed, where, estimated)


def check(budget: Budget | None, metrics: dict[str, float], artifacts: list[str],
          measured_on: str = "host", estimated: bool = False) -> list[Check]:
    """Compare a stage's metrics with its budget.

    Stage-wide metrics are read by their plain names (`accuracy`, `accuracy_drop`,
    `teacher_retention`); per-artifact budgets (size, latency, memory, agreement, speed-up) are
    checked for every artifact in `artifacts` that the budget applies to. A metric that the
    stage did not produce fails its check: a budget is never silently skipped.
    """
    if budget is None:
        return []
    out: list[Check] = []
    plain = [
        ("max_accuracy_drop", "accuracy_drop", False),
        ("min_teacher_retention", "teacher_retention", True),
    ]
    for field, metric, at_least in plain:
        limit = getattr(budget, field)
        if limit is not None:
            out.append(_compare(field, metrics.get(metric), limit, at_least, measured_on, False))
    # min_accuracy gates the stage's own accuracy where it has one (distill, quantize), else the
    # accuracy of each artifact (export, profile).
    per_artifact_accuracy = "accuracy" not in metrics and bool(artifacts)
    if budget.min_accuracy is not None and not per_artifact_accuracy:
        out.append(_compare("min_accuracy", metrics.get("accuracy"), budget.min_accuracy, True,
                            measured_on, False))
    chosen = [a for a in artifacts if budget.artifacts is None or a in budget.artifacts]
    for name in chosen:
        out.extend(_artifact_checks(budget, name, metrics, measured_on, estimated,
                                    per_artifact_accuracy))
    return out


def _artifact_checks(budget: Budget, name: str, metrics: dict[str, float], where: str,
                     estimated: bool, with_accuracy: bool) -> list[Check]:
    def get(metric: str) -> float | None:
        return metrics.get(f"{name}.{metric}")

    out: list[Check] = []
    if budget.max_size is not None:
        out.append(_compare(f"{name}.max_size", get("bytes"), parse_size(budget.max_size),
                            False, where, False))
    if budget.min_top1_agreement is not None:
        out.append(_compare(f"{name}.min_top1_agreement", get("top1_agreement"),
                            budget.min_top1_agreement, True, where, False))
    for arch in ("arm64",):
        if budget.min_top1_agreement is not None and get(f"{arch}_top1_agreement") is not None:
            out.append(_compare(f"{name}.min_{arch}_top1_agreement",
                                get(f"{arch}_top1_agreement"), budget.min_top1_agreement, True,
                                f"{arch} (emulated)", False))
    if budget.min_accuracy is not None and with_accuracy:
        out.append(_compare(f"{name}.min_accuracy", get("accuracy"), budget.min_accuracy,
                            True, where, estimated))
    for percentile, limit in (budget.latency_limits() or {}).items():
        out.append(_compare(f"{name}.max_latency_ms_{percentile}",
                            get(f"latency_ms_{percentile}"), limit, False, where, estimated))
    if budget.max_peak_memory is not None:
        limit_mb = parse_size(budget.max_peak_memory) / 2**20
        out.append(_compare(f"{name}.max_peak_memory_mb", get("peak_memory_mb"), limit_mb,
                            False, where, estimated))
    if budget.min_int8_speedup is not None and "int8" in name:
        out.append(_compare(f"{name}.min_int8_speedup", get("int8_speedup"),
                            budget.min_int8_speedup, True, where, estimated))
    return out
