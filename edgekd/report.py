"""report.json (stable keys, documented in the README); report.html is edgekd.report_html."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from edgekd import __version__
from edgekd.files import sha256_file, write_json
from edgekd.report_html import write_html

PACKAGES = ("torch", "torchvision", "torchao", "onnx", "onnxruntime", "onnxscript",
            "litert-torch", "ai-edge-litert", "executorch", "numpy", "pydantic")

DATA_FACTS = {"source", "path", "train", "val", "test", "image_size", "channels"}
"""The pipeline's data fields the report shows (report.json `data`)."""


def environment() -> dict:
    """Package versions, CPU and thread facts of the machine that ran the pipeline."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"edgekd": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "packages": versions}


def build(run) -> dict:
    """The report document for a Run (see README, "report.json")."""
    stages, checks, artifacts = [], [], []
    for record in run.records:
        result = record.result
        stage_checks = [c.as_dict() for c in record.checks]
        stages.append({
            "kind": record.kind, "status": record.status, "key": record.key,
            "duration_s": round(record.duration_s, 3), "error": record.error,
            "compute_s": result.compute_s if result else None,
            "metrics": result.metrics if result else {},
            "summary": result.summary if result else {},
            "checks": stage_checks,
            "measured_on": result.measured_on if result else None,
            "estimated": result.estimated if result else False,
            "artifacts": [a.as_dict() for a in result.artifacts.values()] if result else [],
            "warnings": result.warnings if result else [],
            "info": result.info if result else {},
            "history": result.history if result else {},
        })
        checks += [{**c, "stage": record.kind} for c in stage_checks]
        artifacts += stages[-1]["artifacts"]
    return {
        "edgekd_version": __version__, "pipeline": run.pipeline.name,
        "source": str(run.source), "run_dir": str(run.run_dir), "target": run.pipeline.target,
        "verdict": run.verdict, "exit_code": run.exit_code, "message": run.message,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started)),
        "duration_s": round(time.time() - run.started, 3),
        "data": run.pipeline.data.model_dump(mode="json", include=DATA_FACTS),
        "stages": stages, "checks": checks, "artifacts": artifacts,
        "environment": environment(),
    }


def write(run) -> dict:
    """Write report.json and report.html into the run directory; returns the document."""
    doc = seal(build(run), run.run_dir)
    write_json(run.run_dir / "report.json", doc)
    write_html(doc, run.run_dir / "report.html")
    return doc


def seal(doc: dict, run_dir: Path) -> dict:
    """`doc` with what `stale` checks later: `stage_records`, the SHA-256 of each stage's
    stage.json as the report saw it (None where there was none), and `sha256`, the digest of
    the whole document (as JSON)."""
    doc = json.loads(json.dumps(doc, default=str))  # the values report.json will hold
    doc["stage_records"] = {s["kind"]: _record_hash(run_dir, s["kind"]) for s in doc["stages"]}
    doc["sha256"] = _digest(doc)
    return doc


def stale(doc: dict, run_dir: Path) -> str | None:
    """Why report.json no longer describes `run_dir`, or None: it was edited (its digest
    does not match, or was removed), a stage ran again (or ran and failed) after it was
    written, or a file it reports is missing or changed since (a shipped model deleted or
    replaced)."""
    if not isinstance(doc.get("sha256"), str) or doc["sha256"] != _digest(doc) \
            or not isinstance(doc.get("stage_records"), dict):
        return "it was changed after edgekd wrote it (its digest is missing or does not match)"
    records = {str(kind): (digest, _record_hash(run_dir, str(kind)))
               for kind, digest in doc["stage_records"].items()}
    gone = [f"{kind}/stage.json" for kind, (was, now) in records.items() if was and not now]
    if gone:
        return f"{', '.join(gone)} is missing (a stage's folder was removed since)"
    changed = [f"{kind}/stage.json" for kind, (was, now) in records.items() if was != now]
    if changed:
        return (f"{', '.join(changed)} changed after it was written (a stage ran again, or "
                "is running, since)")
    listed = doc.get("artifacts") or []
    if not isinstance(listed, list):
        return "its artifacts field is not a list"
    gone = [why for why in (_artifact_problem(a, doc, run_dir) for a in listed) if why]
    if gone:
        return f"{'; '.join(gone[:3])}{f' (and {len(gone) - 3} more)' if len(gone) > 3 else ''}"
    return None


def _artifact_problem(raw, doc: dict, run_dir: Path) -> str | None:
    """'PATH is missing' / 'PATH changed since' for a file the report lists, read from
    `run_dir` when it was written under the report's own run directory (a moved run)."""
    from edgekd.artifacts import Artifact

    try:
        artifact = Artifact.from_dict(raw)
        path, written_in = artifact.path, str(doc.get("run_dir"))
        if path.is_absolute() and path.is_relative_to(written_in):
            artifact = replace(artifact, path=run_dir / path.relative_to(written_in))
        shown = artifact.path.relative_to(run_dir) if artifact.path.is_relative_to(run_dir) \
            else artifact.path
        if not artifact.path.is_file():
            return f"{shown} ({artifact.name}) is missing"
        return None if artifact.intact() else f"{shown} ({artifact.name}) changed since"
    except (TypeError, KeyError, ValueError, AttributeError, OSError):
        return f"an artifact entry is not one edgekd writes ({str(raw)[:80]})"


def _record_hash(run_dir: Path, kind: str) -> str | None:
    path = run_dir / kind / "stage.json"
    return sha256_file(path) if path.is_file() else None


def _digest(doc: dict) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()
