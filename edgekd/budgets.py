"""Budgets: one type per stage (each accepts only the limits that stage can check), human
units ("1 GB", "100 ms") and the pure gate check.

`check()` turns a stage's metrics and its budget into a list of `Check`s; it does no I/O, so a
gate can be re-evaluated from a report alone. A limit written on a stage that cannot check it
(`max_latency_ms` on distill) is a config error naming the stages that can.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from edgekd.schema import Strict, did_you_mean

Percentile = Literal["mean", "p50", "p90", "p99"]

_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_NUMBER_UNIT = re.compile(r"^\s*([<>]=?)?\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-zA-Z]*)\s*$")


def _split(text: str, example: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"cannot read {text!r}: expected a number and a unit, like "
                         f"'{example}'")
    return _limit(float(match.group(2))), match.group(3).lower()


def _limit(value: Any) -> float:
    """`value` if it can be a limit: a finite number, not negative, not true/false (YAML's
    booleans are ints to Python, so `max_size: true` would mean 1 byte)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {str(value).lower()}")
    if isinstance(value, int | float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, not {value}")
    if isinstance(value, int | float) and value < 0:
        raise ValueError(f"a limit cannot be negative (got {value})")
    return value


MAX_SIZE = 10**15
"""The largest size limit read (1000 TB): beyond any model or memory, and far below a figure
such as 1e308 GB, which is no finite number of bytes."""


def parse_size(value: str | int | float) -> int:
    """Bytes from "2 MB", "1.5GiB", "<1 GB" or a plain number of bytes, at most MAX_SIZE."""
    if isinstance(value, int | float):
        size = _limit(value)
    else:
        number, unit = _split(value, "2 MB")
        if unit not in _SIZE_UNITS:
            raise ValueError(f"unknown size unit {unit!r} in {value!r} "
                             "(use B, KB, MB, GB, KiB, MiB, GiB)")
        size = number * _SIZE_UNITS[unit]
    if not size <= MAX_SIZE:  # also inf, from a product too large for a float
        raise ValueError(f"{value!r} is larger than any size limit can be (at most 1000 TB)")
    return int(size)


def parse_duration_ms(value: str | int | float) -> float:
    """Milliseconds from "100 ms", "0.5 s", "<250us" or a plain number of milliseconds."""
    if isinstance(value, int | float):
        return float(_limit(value))
    number, unit = _split(value, "100 ms")
    unit = unit or "ms"
    if unit not in _TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r} in {value!r} (use us, ms, s)")
    return number * _TIME_UNITS[unit]


class _Budget(Strict):
    """Limits a stage must meet; a failed one stops the run (exit 3) unless --no-gate."""

    stage: ClassVar[str]
    per_artifact: ClassVar[bool] = False
    """True: accuracy and the other limits apply to each artifact the stage evaluated."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` is not a limit (pydantic would read it as 1); ranges are on each field."""
        if isinstance(value, bool) and info.field_name != "artifacts":
            _limit(value)
        return value

    @classmethod
    def misplaced_keys(cls) -> dict[str, str]:
        """Limits other stages check, each with where it belongs (for the error line)."""
        owners: dict[str, list[str]] = {}
        for other in BUDGETS.values():
            for name in other.model_fields:
                if name not in cls.model_fields:
                    owners.setdefault(name, []).append(other.stage)
        def article(word: str) -> str:
            return f"an {word}" if word[0] in "aeiou" else f"a {word}"

        return {name: f"{article(cls.stage)} budget cannot check {name}; it belongs in the "
                      f"budget of {article(' or '.join(stages))} stage"
                for name, stages in owners.items()}


class DistillBudget(_Budget):
    """Limits on the distilled fp32 student (measured with PyTorch on the host)."""

    stage: ClassVar[str] = "distill"
    min_accuracy: float | None = Field(None, ge=0, le=1)
    """Student test accuracy."""
    min_teacher_retention: float | None = Field(None, ge=0)
    """Student accuracy / teacher accuracy, e.g. 0.97."""
    max_params: int | None = Field(None, ge=1)
    """Student parameters. Size limits are checked before training starts, too."""
    min_param_ratio: float | None = Field(None, gt=0)
    """Teacher parameters / student parameters, e.g. 10 for a 10x smaller student."""
    max_macs: int | None = Field(None, ge=1)
    """Student multiply-accumulates per sample at the data's input size."""


class QuantizeBudget(_Budget):
    """Limits on the int8 model (the converted PyTorch model, on the host)."""

    stage: ClassVar[str] = "quantize"
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Accuracy lost against the fp32 student (fp32 - int8)."""


class _PerArtifact(_Budget):
    per_artifact: ClassVar[bool] = True
    min_accuracy: float | None = Field(None, ge=0, le=1)
    """Test accuracy of each artifact, by its own runtime."""
    artifacts: list[str] | None = None
    """Artifacts the limits apply to; default all of the stage's deployable artifacts. Each
    name must be one the export stage writes (checked when the pipeline loads)."""

    @field_validator("max_size", "max_peak_memory", "max_model_memory", mode="before",
                     check_fields=False)
    @classmethod
    def _size(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_size(value)
        return value


class ExportBudget(_PerArtifact):
    """Limits on each exported file, checked on the host by its own runtime."""

    stage: ClassVar[str] = "export"
    max_size: str | int | None = None
    """File size of each artifact, e.g. "2 MB"."""
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    """Share of test samples where the file and its PyTorch source agree on the top class
    (also gates the emulated arm64 run when `validate_arch` is set)."""
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Accuracy each int8 file loses against the fp32 student (fp32 - int8), each by its own
    runtime. Unset, it is the quantize stage's `max_accuracy_drop`: the files that ship are
    gated, not only the PyTorch model (with `method: ptq` the int8 ONNX file is calibrated by
    onnxruntime in export, apart from the model the quantize stage measured)."""
    min_delegated_ops: float | None = Field(None, ge=0, le=1)
    """Share of each file's ops its XNNPACK delegate runs, e.g. 1.0 for all of them (ops left
    out run on slower reference / portable kernels, and each split of the delegate costs a
    hand-over). Checked for the files of runtimes with a delegate: ExecuTorch (.pte) and
    LiteRT (.tflite); ONNX Runtime files have none."""


class ProfileBudget(_PerArtifact):
    """Limits on each artifact measured (or estimated) on the target device."""

    stage: ClassVar[str] = "profile"
    max_latency_ms: float | str | dict[str, float | str] | None = None
    """A number or "100 ms" limits p90; a map limits each percentile named (mean, p50, p90,
    p99)."""
    max_peak_memory: str | int | None = None
    """Peak resident memory of the inference process, e.g. "1 GB"."""
    max_model_memory: str | int | None = None
    """Resident memory the model adds to its runtime's process (the peak minus the process
    with the runtime loaded), e.g. "50 MB": the figure to gate when the runtime's own share is
    not what ships (ExecuTorch's Python runtime loads torch, about 700 MB, which a C++
    executor_runner on a device does not)."""
    min_int8_speedup: float | None = Field(None, gt=0)
    """fp32 latency / int8 latency on the same runtime (p50), for each int8 artifact."""

    @field_validator("max_latency_ms", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        """One error line for any wrong latency limit (not one per union member)."""
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in get_args(Percentile):
                    raise ValueError(f"unknown percentile {key!r}"
                                     f"{did_you_mean(key, get_args(Percentile))}; use "
                                     f"{', '.join(get_args(Percentile))}")
                parse_duration_ms(item)
        elif value is not None:
            parse_duration_ms(value)
        return value

    def latency_limits(self) -> dict[str, float] | None:
        """The latency limit per percentile, in ms."""
        if self.max_latency_ms is None:
            return None
        if isinstance(self.max_latency_ms, dict):
            return {k: parse_duration_ms(v) for k, v in self.max_latency_ms.items()}
        return {"p90": parse_duration_ms(self.max_latency_ms)}


BUDGETS: dict[str, type[_Budget]] = {
    b.stage: b for b in (DistillBudget, QuantizeBudget, ExportBudget, ProfileBudget)}
Budget = DistillBudget | QuantizeBudget | ExportBudget | ProfileBudget


@dataclass(frozen=True)
class Check:
    """One budget line compared with one measured (or estimated) value."""

    name: str
    value: float | None
    limit: float
    passed: bool
    measured_on: str = "host"
    estimated: bool = False
    unit: str = ""
    """The unit of value and limit when it is not the metric's plain number: MiB, or B
    (bytes, shown in kB / MB / GB)."""
    written: str = ""
    """The limit as the pipeline wrote it, when that is in another unit ("1 GB")."""

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: `ok   name: value (limit >= x, measured on host)`, with the unit and the
        limit as written where they differ (`731 MiB (limit <= 953.7 MiB = 1 GB, ...)`)."""
        value, limit = self.shown()
        how = "estimated" if self.estimated else "measured"
        state = "ok  " if self.passed else "FAIL"
        return f"{state} {self.name}: {value} (limit {limit}, {how} on {self.measured_on})"

    def shown(self) -> tuple[str, str]:
        """(value, limit) as text, with their unit and the digits that tell them apart:
        `("731.2 MiB", "<= 953.7 MiB = 1 GB")`."""
        op = ">=" if self.name.startswith("min_") or ".min_" in self.name else "<="
        digits = _telling_digits(self.value, self.limit)

        def show(x: float) -> str:
            if self.unit == "B":  # file sizes: 14.6 kB, not 1.46e+04
                e, unit = next((e, u) for e, u in ((9, "GB"), (6, "MB"), (3, "kB"), (0, "B"))
                               if abs(x) >= 10**e or e == 0)
                return f"{x / 10**e:.{digits}g} {unit}"
            return f"{x:.{digits}g}" + (f" {self.unit}" if self.unit else "")

        written = f" = {self.written}" if self.written else ""
        return ("missing" if self.value is None else show(self.value),
                f"{op} {show(self.limit)}{written}")


def _telling_digits(value: float | None, limit: float) -> int:
    """Significant digits (4 to 12) that show `value` and `limit` apart when they differ, so
    0.98999 against 0.99 never reads `0.99 (limit >= 0.99)`."""
    if value is None or value == limit:
        return 4
    return next((d for d in range(4, 12) if f"{value:.{d}g}" != f"{limit:.{d}g}"), 12)


def _compare(name: str, value: float | None, limit: float, at_least: bool, where: str,
             estimated: bool) -> Check:
    passed = value is not None and (value >= limit if at_least else value <= limit)
    return Check(name, value, limit, passed, where, estimated)


SIZE_LIMITS = [("max_params", "student_params", False), ("min_param_ratio", "param_ratio", True),
               ("max_macs", "student_macs", False)]
"""Limits on the student's size: (budget field, metric, at least?). Known before training."""


def has_size_limits(budget: Budget | None) -> bool:
    """True when `budget` sets any of SIZE_LIMITS."""
    return any(getattr(budget, field, None) is not None for field, _m, _a in SIZE_LIMITS)


def check_sizes(budget: Budget | None, metrics: dict[str, float]) -> list[Check]:
    """The size limits of `budget` (SIZE_LIMITS) against `metrics`, before a stage trains."""
    return [_compare(field, metrics.get(metric), getattr(budget, field), at_least, "host", False)
            for field, metric, at_least in SIZE_LIMITS
            if getattr(budget, field, None) is not None]


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
    if not budget.per_artifact:
        plain = [("max_accuracy_drop", "accuracy_drop", False),
                 ("min_teacher_retention", "teacher_retention", True),
                 ("min_accuracy", "accuracy", True), *SIZE_LIMITS]
        return [_compare(field, metrics.get(metric), getattr(budget, field), at_least,
                         measured_on, False)
                for field, metric, at_least in plain if getattr(budget, field, None) is not None]
    out: list[Check] = []
    for name in [a for a in artifacts if budget.artifacts is None or a in budget.artifacts]:
        out.extend(_artifact_checks(budget, name, metrics, measured_on, estimated))
    return out


def _delegates(artifact: str) -> bool:
    """The artifact's runtime runs a delegate whose coverage is measured (format table)."""
    from edgekd.export.formats import RUNTIMES, by_artifact

    fmt = by_artifact(artifact)
    return fmt is not None and RUNTIMES[fmt.runtime].delegates


def _artifact_checks(budget: Budget, name: str, metrics: dict[str, float], where: str,
                     estimated: bool) -> list[Check]:
    def get(metric: str) -> float | None:
        return metrics.get(f"{name}.{metric}")

    limit = lambda field: getattr(budget, field, None)  # noqa: E731  (fields vary by stage)
    out: list[Check] = []
    if limit("max_size") is not None:
        out.append(replace(_compare(f"{name}.max_size", get("bytes"),
                                    parse_size(budget.max_size), False, where, False), unit="B"))
    if limit("min_top1_agreement") is not None:
        out.append(_compare(f"{name}.min_top1_agreement", get("top1_agreement"),
                            budget.min_top1_agreement, True, where, False))
    for arch in ("arm64",):
        if limit("min_top1_agreement") is not None and get(f"{arch}_top1_agreement") is not None:
            out.append(_compare(f"{name}.min_{arch}_top1_agreement",
                                get(f"{arch}_top1_agreement"), budget.min_top1_agreement, True,
                                f"{arch} (emulated)", False))
    if limit("max_accuracy_drop") is not None and "int8" in name:
        out.append(_compare(f"{name}.max_accuracy_drop", get("accuracy_drop"),
                            budget.max_accuracy_drop, False, where, False))
    if limit("min_delegated_ops") is not None and _delegates(name):
        out.append(_compare(f"{name}.min_delegated_ops", get("delegated_ops"),
                            budget.min_delegated_ops, True, where, False))
    if budget.min_accuracy is not None:
        out.append(_compare(f"{name}.min_accuracy", get("accuracy"), budget.min_accuracy,
                            True, where, estimated))
    latency = budget.latency_limits() if isinstance(budget, ProfileBudget) else None
    for percentile, ms in (latency or {}).items():
        out.append(_compare(f"{name}.max_latency_ms_{percentile}",
                            get(f"latency_ms_{percentile}"), ms, False, where, estimated))
    for field, metric in (("max_peak_memory", "peak_memory_mb"),
                          ("max_model_memory", "model_memory_mb")):
        if limit(field) is not None:  # the runners measure MiB (VmHWM / 1024)
            written = limit(field)
            out.append(replace(
                _compare(f"{name}.{field}_mb", get(metric), parse_size(written) / 2**20, False,
                         where, estimated),
                unit="MiB", written=written if isinstance(written, str) else f"{written} B"))
    if limit("min_int8_speedup") is not None and "int8" in name:
        out.append(_compare(f"{name}.min_int8_speedup", get("int8_speedup"),
                            budget.min_int8_speedup, True, where, estimated))
    return out
