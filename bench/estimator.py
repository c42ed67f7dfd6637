"""How near edgekd's estimates for unreachable devices come to published measurements
(issue 16).

    python -m bench.estimator [--quick]

The published rows are edgekd's calibration data, edgekd/profiles/published/latency.yaml:
ncnn and XNNPACK latencies of image classifiers on Raspberry Pi 4 and 5, each with the line it
was read from. The figures of each network (dense and depthwise MACs, activation bytes,
layers) come from a torchvision stand-in with random weights (`weights=None`: nothing is
downloaded), exported once with edgekd's own ONNX writer into bench/.work/estimator/ and
counted by `edgekd.devices.estimate.onnx_figures`; the run stops if they differ from the
figures the data file ships (it prints the counted ones). --quick skips the exports and uses
the shipped figures.

Per row: the calibrated estimate from the fit to every row ("fitted"), from a fit without any
row of that network (leave-one-model-out, "held out": the error a new network can expect), and
the uncalibrated spec roofline edgekd used before (at the profile's thread count only).
Error = estimate / published - 1.
"""

from __future__ import annotations

import sys

import numpy as np

from bench.common import Report, parse_args, table

GOAL_PCT = 25.0
"""Issue 16: median held-out error on Raspberry Pi networks not used for fitting."""
FIGURES = ("dense_macs", "depthwise_macs", "activation_bytes", "params", "layers")


def mobilenet_v1():
    """MobileNet v1 1.0 (224 px), which torchvision lacks: ncnn's `mobilenet` and XNNPACK's
    `MobileNet v1 1.0X` (13 depthwise-separable blocks, BatchNorm folded at export)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                             nn.BatchNorm2d(cin), nn.ReLU(),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
            (256, 512, 2), *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         *[block(*p) for p in plan], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1024, 1000))


def build(builder: str):
    """The stand-in network, random weights, eval mode."""
    import torch
    import torchvision

    torch.manual_seed(0)
    if builder == "mobilenet_v1":
        return mobilenet_v1().eval()
    extra = {"aux_logits": False, "init_weights": False} if builder == "googlenet" else {}
    return getattr(torchvision.models, builder)(weights=None, **extra).eval()


def counted_figures(data, work) -> dict[str, dict]:
    """Each network's figures from its ONNX export (exported once, then reused)."""
    from edgekd.devices.estimate import onnx_figures
    from edgekd.export.writers import write_onnx

    folder = work / "estimator"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, net in data.models.items():
        path = folder / f"{net.builder}-{net.input}.onnx"
        if not path.is_file():
            print(f"exporting {net.builder} at {net.input} px -> {path}", flush=True)
            write_onnx(build(net.builder), (3, net.input, net.input), path, opset=18)
        out[name] = onnx_figures(path)
    return out


def check_figures(data, counted: dict[str, dict]) -> list[str]:
    """Networks whose shipped figures differ from the counted ones, as YAML to paste."""
    wrong = []
    for name, got in counted.items():
        shipped = data.models[name].figures()
        if any(shipped[k] != got[k] for k in FIGURES):
            wrong.append(f"{name}: " + ", ".join(f"{k}: {got[k]}" for k in FIGURES))
    return wrong


def roofline_ms(row, data) -> float | None:
    """The uncalibrated spec roofline for a row (None unless the row runs at the profile's
    thread count: the roofline assumes every core)."""
    from edgekd.devices.estimate import roofline
    from edgekd.devices.profiles import load_profile

    device = load_profile(row.board)
    if row.threads != device.threads:
        return None
    int8 = row.precision == "int8"
    figures = data.models[row.model].figures()
    figures["activation_bytes"] *= 0.25 if int8 else 1  # the old estimate read the int8 file
    peak = device.peak_int8_gops if int8 else device.peak_fp32_gflops
    return roofline(figures, "int8" if int8 else "fp32", peak, device)["latency_ms_p50"]


def evaluate(data) -> list[dict]:
    """Every usable row with its fitted, held-out and roofline estimates and their errors."""
    from edgekd.devices.estimate import cross_validate

    rows = []
    by_key = {(r.board, r.model, r.threads, r.precision, r.runtime): r for r in data.rows}
    for r in cross_validate():
        row = by_key[(r["board"], r["model"], r["threads"], r["precision"], r["runtime"])]
        roof = roofline_ms(row, data)
        rows.append({**r, "roofline_ms": roof,
                     **{f"{k}_error": (r[f"{k}_ms"] / r["published_ms"] - 1)
                        if r[f"{k}_ms"] else None for k in ("fitted", "held_out")},
                     "roofline_error": roof / r["published_ms"] - 1 if roof else None})
    return rows


def summary(rows: list[dict], key: str) -> dict:
    """Median, 90th percentile and largest |error| (%) over rows that have `key`."""
    errors = np.array([abs(r[key]) for r in rows if r[key] is not None]) * 100
    if not len(errors):
        return {"n": 0}
    return {"n": int(len(errors)), "median_pct": float(np.median(errors)),
            "p90_pct": float(np.percentile(errors, 90)), "max_pct": float(errors.max())}


def main(argv: list[str] | None = None) -> dict:
    from edgekd.devices.estimate import coefficients, expected_error, rates
    from edgekd.devices.published import load_published, published_path

    args = parse_args(__doc__, argv)
    report = Report("estimator", args)
    data = load_published()
    if args.tiny:
        report.note("quick setting: the shipped figures are used, nothing is exported")
    else:
        wrong = check_figures(data, counted_figures(data, args.work))
        if wrong:
            print("figures in the data file differ from the counted ones:\n  "
                  + "\n  ".join(wrong), file=sys.stderr)
            raise SystemExit(1)
        report.note("the shipped figures equal the ones counted from fresh exports")
    rows = evaluate(data)
    boards = sorted({r["board"] for r in rows})
    results = {"data": str(published_path()), "goal_pct": GOAL_PCT, "rows": rows,
               "summary": {b: {k: summary([r for r in rows if r["board"] == b], f"{k}_error")
                               for k in ("fitted", "held_out", "roofline")} for b in boards},
               "per_model": {}, "rates": {}, "expected_error": {},
               "sources": {k: s.model_dump() for k, s in data.sources.items()}}
    results["summary"]["all"] = {k: summary(rows, f"{k}_error")
                                 for k in ("fitted", "held_out", "roofline")}
    for name in data.models:
        mine = [r for r in rows if r["model"] == name]
        results["per_model"][name] = {"rows": len(mine), **summary(mine, "held_out_error")}
    for board in boards:
        for (group, threads), coef in sorted(coefficients(board, data).items()):
            results["rates"][f"{board} {group} {threads}t"] = rates(coef)
        for group in ("float", "int8"):
            results["expected_error"][f"{board} {group}"] = expected_error(board, group)
    report.doc["results"] = results
    for title, headers, table_rows in tables(report.doc):
        report.add_table(title, headers, table_rows)
    report.write()
    return report.doc


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def tables(doc: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) of the four tables, from the JSON."""
    res = doc.get("results", {})
    keys = ("fitted", "held_out", "roofline")
    summary_rows = [[board, s["held_out"].get("n"), *[s[k].get("median_pct") for k in keys],
                     s["held_out"].get("p90_pct"), s["held_out"].get("max_pct")]
                    for board, s in res.get("summary", {}).items()]
    per_model = [[name, m["rows"], m.get("median_pct"), m.get("max_pct")]
                 for name, m in sorted(res.get("per_model", {}).items(),
                                       key=lambda kv: kv[1].get("median_pct") or 0)]
    rate_rows = [[key, *r.values()] for key, r in res.get("rates", {}).items()]
    row_rows = [[r["board"], r["model"], r["runtime"], r["precision"], r["threads"],
                 r["published_ms"], r["fitted_ms"], _pct(r["fitted_error"]), r["held_out_ms"],
                 _pct(r["held_out_error"]), _pct(r["roofline_error"])]
                for r in res.get("rows", [])]
    return [
        ("Error of the estimates against published latencies (|estimate / published - 1|, %)",
         ["board", "rows", "median fitted", "median held out", "median roofline (before)",
          "p90 held out", "max held out"], summary_rows),
        ("Held-out error per network (leave-one-model-out, %)",
         ["network", "rows", "median", "max"], per_model),
        ("Fitted rates (per board, precision class, threads; '-': no cost of that kind found)",
         ["fit", "dense GMAC/s", "depthwise GMAC/s", "activation GB/s", "us per layer"],
         rate_rows),
        ("Every row: published vs estimated latency (ms; error %)",
         ["board", "network", "runtime", "precision", "threads", "published", "fitted",
          "err", "held out", "err", "roofline err"], row_rows),
    ]


def section(doc: dict) -> str:
    """bench/README.md's section: a short lead, the tables, the notes."""
    res = doc.get("results", {})
    sources = "; ".join(f"[{k}]({s['url']})" for k, s in res.get("sources", {}).items())
    lead = (f"Published latencies ({sources}) against edgekd's estimate of each: fitted to "
            "every row, held out (fitted without that network: what a new network can "
            "expect), and the uncalibrated spec roofline edgekd used before. The data, with the "
            "line each number was read from: `edgekd/profiles/published/latency.yaml`.")
    parts = [lead, ""]
    for title, headers, rows in tables(doc):
        parts += [f"**{title}**", "", table(headers, rows), ""]
    parts += [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(parts) + "\n"


def goals(doc: dict) -> list[list]:
    """[goal, measured, verdict, by how much]: issue 16's held-out median error."""
    s = doc.get("results", {}).get("summary", {}).get("all", {}).get("held_out", {})
    label = (f"estimates for unreachable devices: median error <= {GOAL_PCT:g} % on Raspberry "
             "Pi networks not used for fitting (issue 16)")
    if not s.get("n"):
        return [[label, "not measured", "-", "-"]]
    median = s["median_pct"]
    return [[label, f"{median:.1f} % over {s['n']} rows (p90 {s['p90_pct']:.0f} %)",
             "met" if median <= GOAL_PCT else "MISSED",
             f"{GOAL_PCT - median:+.1f} points"]]


REASONS = {
    "vgg16": "4x the MACs of any other network, all in large 3 x 3 convolutions, which ncnn "
             "runs with Winograd",
    "alexnet": "its time is mostly reading 58 M fully-connected weights, a cost no feature "
               "counts",
    "shufflenet_v2_x1_0": "channel shuffles and splits, which move data the features do not "
                          "count",
    "regnet_y_400mf": "grouped convolutions of 8 to 16 channels a group, counted as dense",
    "googlenet": "the published network is the original with 5 x 5 convolutions and LRN, the "
                 "stand-in has fewer MACs",
}
"""Why a network's held-out error is high, where the cause is known."""


def why(doc: dict) -> list[str]:
    """Bullets on where the estimate is weakest: the networks above the goal."""
    res = doc.get("results", {})
    worst = sorted(((n, m) for n, m in res.get("per_model", {}).items()
                    if (m.get("median_pct") or 0) > GOAL_PCT), key=lambda kv: -kv[1]["median_pct"])
    if not worst:
        return []
    return [f"- **Estimator: networks above {GOAL_PCT:g} % median held-out error:** " + "; ".join(
        f"{n} {m['median_pct']:.0f} %" + (f" ({REASONS[n]})" if n in REASONS else "")
        for n, m in worst) + ". Held out, each is predicted from networks unlike it; their "
        "rows are most of those outside the 10th-90th percentile band every estimate carries."]


if __name__ == "__main__":
    main(sys.argv[1:])
