"""report.json (stable keys, documented in the README) and report.html with plots."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from edgekd import __version__
from edgekd.files import write_json, write_text

PACKAGES = ("torch", "torchvision", "torchao", "onnx", "onnxruntime", "onnxscript",
            "litert-torch", "ai-edge-litert", "executorch", "numpy", "pydantic")


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
        "stages": stages, "checks": checks, "artifacts": artifacts,
        "environment": environment(),
    }


def write(run) -> dict:
    """Write report.json and report.html into the run directory; returns the document."""
    doc = build(run)
    write_json(run.run_dir / "report.json", doc)
    write_html(doc, run.run_dir / "report.html")
    return doc


def write_html(doc: dict, path: Path) -> None:
    """Render the report: verdict, checks, metrics tables and plots."""
    parts = [f"<h1>edgekd: {html.escape(doc['pipeline'])} "
             f"<span class='{doc['verdict']}'>{doc['verdict'].upper()}</span></h1>",
             f"<p>{html.escape(doc.get('message') or '')}</p>",
             f"<p>target <b>{html.escape(doc['target'])}</b>, started {doc['started']}, "
             f"{doc['duration_s']:.1f} s</p>"]
    parts.append(_checks_table(doc["checks"]))
    for title, image in _plots(doc):
        parts.append(f"<h2>{title}</h2><img src='data:image/png;base64,{image}'>")
    for stage in doc["stages"]:
        parts.append(_stage_section(stage))
    env = html.escape(json.dumps(doc["environment"], indent=1))
    parts.append(f"<h2>Environment</h2><pre>{env}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} td,th{padding:2px 8px;"
             "text-align:left} .pass{color:#080} .fail{color:#b00} table{border-collapse:"
             "collapse} tr:nth-child(even){background:#f4f4f4} .warn{color:#b60}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd "
            f"{html.escape(doc['pipeline'])}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    write_text(path, text)


def _checks_table(checks: list[dict]) -> str:
    if not checks:
        return "<p>No budgets.</p>"
    rows = "".join(
        f"<tr><td class='{'pass' if c['passed'] else 'fail'}'>{'ok' if c['passed'] else 'FAIL'}"
        f"</td><td>{html.escape(c['stage'])}</td><td>{html.escape(c['name'])}</td>"
        f"<td>{_num(c['value'])}</td><td>{_num(c['limit'])}</td>"
        f"<td>{'estimated' if c.get('estimated') else 'measured'} on "
        f"{html.escape(str(c.get('measured_on')))}</td></tr>" for c in checks)
    return ("<h2>Budgets</h2><table><tr><th></th><th>stage</th><th>check</th><th>value</th>"
            f"<th>limit</th><th>how</th></tr>{rows}</table>")


def _stage_section(stage: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_num(v)}</td></tr>"
                   for k, v in sorted(stage["metrics"].items()))
    warnings = "".join(f"<p class='warn'>WARNING {html.escape(w)}</p>"
                       for w in stage.get("warnings", []))
    error = f"<p class='fail'>{html.escape(stage['error'])}</p>" if stage.get("error") else ""
    files = "".join(f"<tr><td>{html.escape(a['name'])}</td><td>{html.escape(a['path'])}</td>"
                    f"<td>{a['bytes']:,} B</td></tr>" for a in stage["artifacts"])
    info = stage.get("info") or {}
    how = "; ".join(f"{label} {html.escape(str(info[key]))}" for key, label in (
        ("device", "measured on" if stage["kind"] == "profile" else "trained on"),
        ("gpu", "GPU"), ("precision", "precision"),
        ("images_per_s", "images/s"), ("test_split", "accuracies on the test split,"),
        ("shipped", "shipped:"), ("export_check", "export check before training:"))
        if info.get(key) is not None)
    how = f"<p>{how}</p>" if how else ""
    how += "".join(_model_line(role, info[role]) for role in ("teacher", "student")
                   if isinstance(info.get(role), dict))
    return (f"<h2>{html.escape(stage['kind'])}: {stage['status']} "
            f"({stage['duration_s']:.1f} s)</h2>{error}{warnings}{how}"
            f"<table>{rows}</table><table>{files}</table>")


def _model_line(role: str, model: dict) -> str:
    """How a model was built (edgekd.models.describe): source, input, notes, trust."""
    parts = [f"{role}: {model['source']}", f"input {model['input']}", *model.get("notes", [])]
    if model.get("trusted_checkpoint"):
        parts.append(f"trusted checkpoint (unpickled) {model['trusted_checkpoint']}")
    return f"<p>{html.escape('; '.join(parts))}</p>"


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _plots(doc: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for title, draw in (("Accuracy per model", _plot_accuracy),
                        ("Latency per artifact", _plot_latency),
                        ("Training curves", _plot_curves)):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        if draw(doc, ax):
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            out.append((title, base64.b64encode(buf.getvalue()).decode()))
        plt.close(fig)
    return out


def _metrics(doc: dict, kind: str) -> dict:
    return next((s["metrics"] for s in doc["stages"] if s["kind"] == kind), {})


def _limit(doc: dict, suffix: str) -> float | None:
    limits = [c["limit"] for c in doc["checks"] if c["name"].endswith(suffix)]
    return min(limits) if limits else None


def _plot_accuracy(doc: dict, ax) -> bool:
    values = {}
    distill = _metrics(doc, "distill")
    for label, key in (("teacher", "teacher_accuracy"), ("baseline", "baseline_accuracy"),
                       ("student fp32", "accuracy")):
        if key in distill:
            values[label] = distill[key]
    if "accuracy" in _metrics(doc, "quantize"):
        values["student int8 (torch)"] = _metrics(doc, "quantize")["accuracy"]
    for kind in ("export", "profile"):
        for key, value in _metrics(doc, kind).items():
            if key.endswith(".accuracy"):
                values[f"{key.removesuffix('.accuracy')} ({kind})"] = value
    if not values:
        return False
    bars = ax.barh(list(values), list(values.values()), color="#4a7")
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xlim(max(0.0, min(values.values()) - 0.1), 1.02)
    ax.tick_params(axis="y", labelsize=8)
    limit = _limit(doc, "min_accuracy")
    if limit is not None:
        ax.axvline(limit, color="#b00", linestyle="--", label=f"budget {limit:.3g}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_xlabel("test accuracy")
    return True


def _plot_latency(doc: dict, ax) -> bool:
    metrics = _metrics(doc, "profile")
    names = sorted({k.split(".")[0] for k in metrics if k.endswith(".latency_ms_p50")})
    if not names:
        return False
    width = 0.27
    for i, pct in enumerate(("p50", "p90", "p99")):
        bars = ax.bar([n + (i - 1) * width for n in range(len(names))],
                      [metrics.get(f"{name}.latency_ms_{pct}", 0) for name in names], width,
                      label=pct)
        ax.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yscale("log")  # budgets are often orders of magnitude above small models' latency
    ax.set_ylabel("latency (ms, log)")
    for pct in ("p50", "p90", "p99"):
        limit = _limit(doc, f"max_latency_ms_{pct}")
        if limit is not None:
            ax.axhline(limit, color="#b00", linestyle="--", label=f"budget {pct} {limit:.3g} ms")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return True


def _plot_curves(doc: dict, ax) -> bool:
    drawn = False
    for stage in doc["stages"]:
        for name, history in stage.get("history", {}).items():
            history = [h for h in history if h.get("val_accuracy") is not None]
            if history:
                (line,) = ax.plot([h["epoch"] for h in history],
                                  [h["val_accuracy"] for h in history],
                                  label=f"{name} ({stage['kind']})")
                kept = [h for h in history if h.get("kept")]  # the weights training kept
                ax.plot([h["epoch"] for h in kept], [h["val_accuracy"] for h in kept], "o",
                        color=line.get_color())
                drawn = True
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_ylabel("val accuracy (dot: epoch kept)")
        ax.legend(fontsize=8)
    return drawn
