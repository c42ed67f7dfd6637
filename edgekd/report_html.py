"""report.html: what a person reads after a run, most important first.

Top to bottom: the verdict (with every failed check), the headline figures, every warning,
the data and its splits, the budget table, the plots, one section per stage, the environment.
Rendered from report.json alone (`edgekd report` re-renders old runs), so every field added
after the first report.json is optional here.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from edgekd.budgets import Check
from edgekd.files import write_text

STYLE = """
body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 8px}
td,th{padding:2px 8px;text-align:left} table{border-collapse:collapse}
tr:nth-child(even){background:#f4f4f4} .pass{color:#080} .fail{color:#b00} .warn{color:#b60}
.verdict{color:#fff;padding:14px 20px;margin:12px 0;border-radius:6px}
.verdict.pass{background:#1a7f37} .verdict.fail{background:#c62828}
.verdict h1{margin:0;font-size:28px} .verdict p{margin:6px 0 0}
table.headline td{font-size:17px;padding:4px 12px} table.headline td:first-child{color:#555}
ul.warnings li{color:#b60;margin:3px 0}
"""
SHIPPED = ("student_int8_tflite", "student_int8_pte", "student_int8_onnx",
           "student_fp32_tflite", "student_fp32_pte", "student_fp32_onnx")
"""The file the headline speaks for: the first of these the run wrote (int8 first)."""


def write_html(doc: dict, path: Path) -> None:
    """Render the report from a report.json document (README, "report.json")."""
    parts = [_banner(doc), _headline_table(doc), _warnings(doc), _data(doc),
             _checks_table(doc["checks"])]
    for title, image in _plots(doc):
        parts.append(f"<h2>{title}</h2><img src='data:image/png;base64,{image}'>")
    parts += [_stage_section(stage) for stage in doc["stages"]]
    env = html.escape(json.dumps(doc["environment"], indent=1))
    parts.append(f"<h2>Environment</h2><pre>{env}</pre>")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd "
            f"{html.escape(doc['pipeline'])}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    write_text(path, text)


def _banner(doc: dict) -> str:
    verdict = "pass" if doc["verdict"] == "pass" else "fail"
    message = doc.get("message") or ""
    failed = "".join(f"<p>{html.escape(_check(c).describe())} ({html.escape(c['stage'])})</p>"
                     for c in doc["checks"] if not c["passed"]
                     and f"{c['name']} = " not in message)  # the message names the gate's
    message = f"<p>{html.escape(message)}</p>" if message else ""
    return (f"<div class='verdict {verdict}' id='verdict'><h1>{verdict.upper()}: edgekd "
            f"{html.escape(doc['pipeline'])}</h1>{message}{failed}<p>target "
            f"<b>{html.escape(doc['target'])}</b>, started {html.escape(doc['started'])}, "
            f"{doc['duration_s']:.1f} s</p></div>")


# --- the headline --------------------------------------------------------------------------

def shipped(doc: dict) -> str | None:
    """The deployable file the headline figures are for (SHIPPED order), or None."""
    named = {key.split(".")[0] for kind in ("export", "profile") for key in _metrics(doc, kind)}
    named |= {a["name"] for a in doc.get("artifacts", [])}
    return next((name for name in SHIPPED if name in named), None)


def headline(doc: dict) -> list[tuple[str, str]]:
    """The figures a person looks for first, as (label, text): accuracy teacher vs student,
    parameters, file size, int8 speed-up, latency and memory on the target. A figure the run
    did not record is left out."""
    name = shipped(doc)
    return _model_rows(doc, name) + _target_rows(doc, name)


def _model_rows(doc: dict, name: str | None) -> list[tuple[str, str]]:
    distill, profile, export = (_metrics(doc, k) for k in ("distill", "profile", "export"))
    info = next((s.get("info") or {} for s in doc["stages"] if s["kind"] == "distill"), {})
    rows, accuracy = [], [(label, value) for label, value in (
        ("teacher", distill.get("teacher_accuracy", _metrics(doc, "teacher").get("accuracy"))),
        ({"kd": "KD student fp32 (shipped)", "baseline": "hard-label student fp32 (shipped)"}
         .get(info.get("shipped_student"), "student fp32"), distill.get("accuracy")),
        ("hard-label baseline", distill.get("baseline_accuracy")),
        ("int8 (PyTorch)", _metrics(doc, "quantize").get("accuracy")),
        (f"{name} on {doc['target']}", profile.get(f"{name}.accuracy")),
        (f"{name} (host runtime)", None if f"{name}.accuracy" in profile
         else export.get(f"{name}.accuracy"))) if value is not None]
    if accuracy:
        rows.append(("accuracy (test split)",
                     ", ".join(f"{label} {value:.4f}" for label, value in accuracy)))
    if "teacher_params" in distill and "student_params" in distill:
        ratio = distill["teacher_params"] / max(distill["student_params"], 1)
        rows.append(("parameters", f"teacher {_scaled(distill['teacher_params'])}, student "
                     f"{_scaled(distill['student_params'])} " + (f"({ratio:.1f}x fewer)"
                     if ratio >= 1.05 else "(not fewer than the teacher's)")))
    sizes = {a["name"]: a["bytes"] for a in doc.get("artifacts", []) if "bytes" in a}
    if name in sizes:
        fp32 = name.replace("_int8_", "_fp32_")
        rows.append(("file size", f"{name} {_scaled(sizes[name], 'B')}" + (
            f" (fp32 {_scaled(sizes[fp32], 'B')})" if fp32 != name and fp32 in sizes else "")))
    return rows


def _target_rows(doc: dict, name: str | None) -> list[tuple[str, str]]:
    profile, target, rows = _metrics(doc, "profile"), doc["target"], []
    how = " (estimated)" if any(s["kind"] == "profile" and s.get("estimated")
                                for s in doc["stages"]) else ""
    speedups = {k.removesuffix(".int8_speedup"): v for k, v in profile.items()
                if k.endswith(".int8_speedup")}
    if speedups:  # the shipped file's first
        rows.append((f"int8 speed-up on {target}", ", ".join(
            f"{v:.2f}x {k}" for k, v in sorted(speedups.items(), key=lambda kv: kv[0] != name))
            + how))
    latency = [f"{p} {profile[f'{name}.latency_ms_{p}']:.3g} ms" for p in ("p50", "p90", "p99")
               if f"{name}.latency_ms_{p}" in profile]
    if latency:
        rows.append((f"latency on {target}", f"{', '.join(latency)} ({name}){how}"))
    if f"{name}.peak_memory_mb" in profile:
        model = profile.get(f"{name}.model_memory_mb")
        rows.append((f"memory on {target}", f"peak {profile[f'{name}.peak_memory_mb']:.1f} MiB"
                     + (f", model {model:.1f} MiB" if model is not None else "")
                     + f" ({name}){how}"))
    return rows


def _headline_table(doc: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(text)}</td></tr>"
                   for label, text in headline(doc))
    return f"<table class='headline' id='headline'>{rows}</table>" if rows else ""


def _warnings(doc: dict) -> str:
    said = [w if w.startswith(f"{s['kind']}:") else f"{s['kind']}: {w}"  # stage named once
            for s in doc["stages"] for w in s.get("warnings", [])]
    items = "".join(f"<li>WARNING {html.escape(w)}</li>" for w in said)
    return f"<h2>Warnings</h2><ul class='warnings'>{items}</ul>" if items \
        else "<p>No warnings.</p>"


def _data(doc: dict) -> str:
    """Where the data came from, its classes and split sizes, and what the test split is."""
    data = doc.get("data") or {}
    info = next((s["info"] for s in doc["stages"] if (s.get("info") or {}).get("test_split")), {})
    facts = []
    if data.get("source"):
        given = [f"{k} {data[k]}" for k in ("path", "train", "val", "test") if data.get(k)]
        facts.append(f"source {data['source']}" + (f" ({', '.join(given)})" if given else ""))
    if data.get("image_size"):
        facts.append("images resized to {}x{}".format(*data["image_size"]))
    splits = info.get("splits") or {}
    if "classes" in splits:
        facts.append(f"{splits['classes']} classes")
    if splits:
        facts.append("samples: " + ", ".join(f"{k} {splits[k]:,}" for k in ("train", "val", "test")
                                             if k in splits))
    if info.get("test_split"):
        facts.append(f"every accuracy is on the test split, {info['test_split']}")
    return "<h2>Data</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in facts) \
        + "</ul>" if facts else ""


def _scaled(n: float, unit: str = "") -> str:
    """1555914 -> `1.556 M`; in bytes, 107368 -> `107.4 kB` (decimal, as size budgets are)."""
    e, prefix = next((e, p) for e, p in ((9, "G"), (6, "M"), (3, "k"), (0, ""))
                     if abs(n) >= 10**e or e == 0)
    return f"{n / 10**e:.4g} {prefix}{unit}".strip()


# --- tables --------------------------------------------------------------------------------

def _check(c: dict) -> Check:
    """A check from its report.json form (older reports lack unit and written)."""
    return Check(c["name"], c["value"], c["limit"], c["passed"], str(c.get("measured_on")),
                 bool(c.get("estimated")), c.get("unit", ""), c.get("written", ""))


def _checks_table(checks: list[dict]) -> str:
    if not checks:
        return "<p>No budgets.</p>"
    rows = "".join(
        f"<tr><td class='{'pass' if c['passed'] else 'fail'}'>{'ok' if c['passed'] else 'FAIL'}"
        f"</td><td>{html.escape(c['stage'])}</td><td>{html.escape(c['name'])}</td>"
        + "".join(f"<td>{html.escape(text)}</td>" for text in _check(c).shown())
        + f"<td>{'estimated' if c.get('estimated') else 'measured'} on "
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
    return (f"<section class='stage' id='stage-{html.escape(stage['kind'])}'><h2>"
            f"{html.escape(stage['kind'])}: {_timing(stage)}</h2>{error}{warnings}{how}"
            f"<table>{rows}</table><table>{files}</table></section>")


def _timing(stage: dict) -> str:
    """`done (12.3 s)`; a cached stage says what it cost when it ran, not the 0 s of reuse."""
    if stage["status"] != "cached":
        return f"{stage['status']} ({stage['duration_s']:.1f} s)"
    if stage.get("compute_s") is None:  # a report.json from before compute_s was recorded
        return f"cached (reused in {stage['duration_s']:.1f} s)"
    return f"cached (computed in {stage['compute_s']:.1f} s when it ran; reused now)"


def _model_line(role: str, model: dict) -> str:
    """How a model was built (edgekd.models.describe): source, input, notes, trust."""
    parts = [f"{role}: {model['source']}", f"input {model['input']}", *model.get("notes", [])]
    if model.get("trusted_checkpoint"):
        parts.append(f"trusted checkpoint (unpickled) {model['trusted_checkpoint']}")
    return f"<p>{html.escape('; '.join(parts))}</p>"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) \
        else html.escape(str(value))


# --- plots ---------------------------------------------------------------------------------

def _plots(doc: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for title, draw, size in (("Accuracy per model", _plot_accuracy, (9, 3.6)),
                              ("Latency per artifact", _plot_latency, (8, 3.6)),
                              ("Training curves", _plot_curves, (8, 3.6)),
                              (f"Confusion matrix of {shipped(doc)} on the test split",
                               _plot_confusion, (5.5, 4.6))):
        fig, ax = plt.subplots(figsize=size)
        if draw(doc, ax):
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # legends too
            out.append((title, base64.b64encode(buf.getvalue()).decode()))
        plt.close(fig)
    return out


def _metrics(doc: dict, kind: str) -> dict:
    return next((s["metrics"] for s in doc["stages"] if s["kind"] == kind), {})


def accuracy_values(doc: dict) -> dict[str, float]:
    """Test accuracy of every model and file, by the label its bar gets."""
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
    return values


def accuracy_limits(doc: dict) -> list[tuple[str, float, bool]]:
    """Every accuracy floor the checks set, as (check, accuracy, passed): a min_accuracy as
    it is, a min_teacher_retention times the teacher's accuracy, a max_accuracy_drop below the
    accuracy it was measured from."""
    out = []
    for c in doc["checks"]:
        artifact, _, name = c["name"].rpartition(".")
        metrics = _metrics(doc, c["stage"])
        measured = metrics.get(f"{artifact}.accuracy" if artifact else "accuracy")
        if name == "min_accuracy":
            floor = c["limit"]
        elif name == "min_teacher_retention" and "teacher_accuracy" in metrics:
            floor = c["limit"] * metrics["teacher_accuracy"]
        elif name == "max_accuracy_drop" and measured is not None and c["value"] is not None:
            floor = measured + c["value"] - c["limit"]  # the reference accuracy minus the limit
        else:
            continue
        out.append((f"{c['stage']} {c['name']}", floor, c["passed"]))
    return out


def _plot_accuracy(doc: dict, ax) -> bool:
    values = accuracy_values(doc)
    if not values:
        return False
    bars = ax.barh(list(values), list(values.values()), color="#4a7")
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.tick_params(axis="y", labelsize=8)
    floors: dict[tuple[float, bool], list[str]] = {}  # one line per floor, naming its checks
    for check, floor, passed in accuracy_limits(doc):
        stage, _, name = check.partition(" ")
        floors.setdefault((round(floor, 6), passed), []).append(
            f"{stage} {name.rpartition('.')[2]}")
    for (floor, passed), names in sorted(floors.items()):
        shown = sorted(set(names))
        label = ", ".join(n + (f" x{names.count(n)}" if names.count(n) > 1 else "") for n in shown)
        ax.axvline(floor, color="#888" if passed else "#d00", linestyle="--" if passed else "-",
                   label=f"{'' if passed else 'FAILED '}{floor:.3g}: {label}")
    low = min([*values.values(), *(f for f, _ in floors)])
    ax.set_xlim(max(0.0, low - 0.1), 1.02)
    if floors:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
                  title="accuracy limits", title_fontsize=7)
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
    labelled = set()  # each limit over its own artifact's bars: red and solid when it failed
    for check in doc["checks"]:
        name, _, limit_name = check["name"].rpartition(".")
        if name in names and limit_name.startswith("max_latency_ms_"):
            pct, x = limit_name.rpartition("_")[2], names.index(name)
            label = f"{'FAILED ' if not check['passed'] else ''}{pct} limit {check['limit']:.3g} ms"
            ax.hlines(check["limit"], x - 1.5 * width, x + 1.5 * width,
                      colors="#888" if check["passed"] else "#d00",
                      linestyles="--" if check["passed"] else "-",
                      label=None if label in labelled else label)
            labelled.add(label)
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
        ax.set(xlabel="epoch", ylabel="val accuracy (dot: epoch kept)")
        ax.legend(fontsize=8)
    return drawn


def _plot_confusion(doc: dict, ax) -> bool:
    """The shipped file's confusion matrix (export info: rows true class, columns predicted),
    when the export stage recorded one."""
    info = next((s.get("info") or {} for s in doc["stages"] if s["kind"] == "export"), {})
    matrix = (info.get("confusion") or {}).get(shipped(doc))
    if not matrix:
        return False
    classes = [str(c) for c in info.get("classes") or range(len(matrix))]
    image = ax.imshow(matrix, cmap="Blues")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    if len(matrix) <= 20:  # counts stay legible up to about 20 classes
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, n in enumerate(row):
                if n:
                    ax.text(j, i, n, ha="center", va="center", fontsize=7,
                            color="white" if n > top / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, fontsize=7,
                      rotation=90 if max(map(len, classes)) > 3 else 0)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class")
    return True
