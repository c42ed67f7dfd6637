"""Artifacts, stage results and the cache keys that let a rerun skip finished work."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekd import __version__

DEPLOYABLE = ("onnx", "tflite")
"""Formats that run on a device; per-artifact budgets and profiling apply to these."""


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced."""

    name: str
    path: Path
    format: str
    sha256: str
    bytes: int

    @classmethod
    def of(cls, name: str, path: Path, format: str) -> Artifact:
        return cls(name, path, format, sha256_file(path), path.stat().st_size)

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    @property
    def deployable(self) -> bool:
        return self.format in DEPLOYABLE

    def intact(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size == self.bytes \
            and sha256_file(self.path) == self.sha256


@dataclass
class StageResult:
    """What a stage hands to the next ones and to the report."""

    artifacts: dict[str, Artifact]
    metrics: dict[str, float]
    history: dict[str, list[dict]] = field(default_factory=dict)
    """Training curves by model name (per-epoch dicts)."""
    notes: list[str] = field(default_factory=list)
    """Warnings a person should see (e.g. int8 slower than fp32)."""
    info: dict = field(default_factory=dict)
    """Non-numeric facts (device, runtime, conditions)."""

    def as_dict(self) -> dict:
        return {"artifacts": {k: a.as_dict() for k, a in self.artifacts.items()},
                "metrics": self.metrics, "history": self.history, "notes": self.notes,
                "info": self.info}

    @classmethod
    def from_dict(cls, raw: dict) -> StageResult:
        artifacts = {k: Artifact(**{**a, "path": Path(a["path"])})
                     for k, a in raw["artifacts"].items()}
        return cls(artifacts, raw["metrics"], raw.get("history", {}), raw.get("notes", []),
                   raw.get("info", {}))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(kind: str, config: dict, inputs: list[str]) -> str:
    """Hash of a stage's kind, its config (budget excluded), its inputs and edgekd's version."""
    config = {k: v for k, v in config.items() if k != "budget"}
    blob = json.dumps([kind, config, inputs, __version__], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: Path, doc: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
