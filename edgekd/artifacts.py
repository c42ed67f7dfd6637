"""Artifacts, stage results and the cache keys that let a rerun skip finished work."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgekd import __version__
from edgekd.files import sha256_file


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced. `format` is an export-format name (edgekd.export.formats:
    onnx_int8, tflite_fp32, ...) for deployable files, else what the file holds (torch,
    int8-graph, json)."""

    name: str
    path: Path
    format: str
    sha256: str
    bytes: int

    @classmethod
    def of(cls, name: str, path: Path, format: str) -> Artifact:
        """Describe an existing file (hashes it). Raises FileNotFoundError if it is missing."""
        return cls(name, path, format, sha256_file(path), path.stat().st_size)

    def as_dict(self, base: Path | None = None) -> dict:
        """As JSON; the path relative to `base` when the file lies under it (a run directory
        that is moved or copied then still names its own files)."""
        path = self.path
        if base is not None and path.is_absolute() and path.is_relative_to(base):
            path = path.relative_to(base)
        return {**asdict(self), "path": str(path)}

    @classmethod
    def from_dict(cls, raw: dict, base: Path | None = None) -> Artifact:
        """From `as_dict`; a relative path is taken from `base`."""
        path = Path(raw["path"])
        return cls(**{**raw, "path": base / path if base is not None and not path.is_absolute()
                      else path})

    @property
    def deployable(self) -> bool:
        """Runs on a device: a format of the export-format table marked deployable."""
        from edgekd.export.formats import FORMATS

        return self.format in FORMATS and FORMATS[self.format].deployable

    def intact(self) -> bool:
        """The file is still there with the size and SHA-256 recorded (a cache may reuse it)."""
        return self.path.is_file() and self.path.stat().st_size == self.bytes \
            and sha256_file(self.path) == self.sha256


@dataclass
class StageResult:
    """What a stage hands to the stages that need it, to the gate and to the report."""

    artifacts: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """Stage-wide metrics by plain name (accuracy), per-artifact ones as `<artifact>.<name>`."""
    evaluated: list[str] = field(default_factory=list)
    """Artifacts whose per-artifact metrics this stage reports: per-artifact budgets apply to
    these (export: the files it wrote; profile: the files it measured)."""
    measured_on: str = "host"
    """Where the metrics were taken: "host" or the device profile's name."""
    estimated: bool = False
    """True when any metric is an estimate (device unreachable, on_unreachable: estimate)."""
    warnings: list[str] = field(default_factory=list)
    """Things a person should see (e.g. int8 slower than fp32, a suspect measurement)."""
    summary: dict[str, float] = field(default_factory=dict)
    """The few figures a person reads after a run, by label (the CLI prints them)."""
    history: dict[str, list[dict]] = field(default_factory=dict)
    """Training curves by model name (per-epoch dicts)."""
    info: dict = field(default_factory=dict)
    """Descriptive facts for the report (methods, runtimes, measuring conditions); nothing
    reads them to decide anything."""
    compute_s: float | None = None
    """Seconds the stage took when it last ran (not when it was reused from the cache)."""

    def as_dict(self, base: Path | None = None) -> dict:
        """As JSON; artifact paths relative to `base` (the run directory) when under it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["artifacts"] = {k: a.as_dict(base) for k, a in self.artifacts.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict, base: Path | None = None) -> StageResult:
        known = {f.name for f in fields(cls)}
        result = cls(**{k: v for k, v in raw.items() if k in known})
        result.artifacts = {k: Artifact.from_dict(a, base) for k, a in raw["artifacts"].items()}
        return result


def cache_key(kind: str, config: dict, inputs: list[str]) -> str:
    """Hash of a stage's kind, its config (budget excluded), its inputs and edgekd's version."""
    config = {k: v for k, v in config.items() if k != "budget"}
    blob = json.dumps([kind, config, inputs, __version__], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
