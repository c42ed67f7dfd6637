"""Pipeline cost: wall time of each stage of pipelines/mobile.yaml, cold and warm, and the time
of a distillation epoch with the teacher online vs cached vs plain training.

    python -m bench.pipeline_cost [--tiny] [--datasets digits,mnist]

Cold and warm: `edgekd run pipelines/mobile.yaml --no-gate` in a fresh process, into an empty
run directory and then again into the same one (everything cached); the wall time of each
command and each stage's time from its report.json. (--tiny runs a cut-down copy: 1 epoch, no
quantize stage, ONNX fp32 only.)

Epochs: the distill stage alone (`edgekd.pipeline.execute`, teacher loaded from the seed-0
run) with `baseline: false` and `cache_teacher: false` (teacher forward on every batch),
`cache_teacher: true` (teacher logits computed once, then looked up) and `alpha: 0` (KD off),
each timed at two epoch counts in a fresh run directory (the minimum of 3 interleaved repeats,
which discards bursts of load from elsewhere): the difference per extra epoch is the epoch
time, the rest the stage's fixed cost. Plain training is the stage's hard-label baseline:
the extra time `baseline: true` adds, per epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import (
    MOBILE,
    ROOT,
    Report,
    available,
    parse_args,
    pipeline_doc,
    recipe,
    run_pipeline,
    student_run,
)

# (fewer, more) epochs each distill configuration is timed at
EPOCHS = {"full": {"digits": (2, 12), "mnist": (1, 4)}, "tiny": {"digits": (1, 2), "mnist": (1, 2)}}
REPEATS = {"full": 3, "tiny": 1}
MODES = {"online": {"cache_teacher": False}, "cached": {"cache_teacher": True},
         "alpha0": {"cache_teacher": False, "alpha": 0.0}}


def tiny_mobile(work: Path) -> Path:
    """mobile.yaml cut down to seconds: 1 epoch each, no QAT, ONNX fp32 only, 5 timed runs."""
    doc = yaml.safe_load(MOBILE.read_text())
    doc["teacher"]["train"]["epochs"] = 1
    stages = {s["kind"]: s for s in doc["stages"]}
    stages["distill"]["epochs"] = 1
    stages["export"].update(formats=["onnx_fp32"])
    stages["export"]["budget"].pop("artifacts", None)
    stages["profile"].update(runs=5, warmup=1)
    doc["stages"] = [stages[k] for k in ("distill", "export", "profile")]
    path = work / "mobile-tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def edgekd_run(pipeline: Path, out: Path) -> dict:
    """`edgekd run` in a fresh process; its wall time and each stage's status and time."""
    env = {**os.environ, "EDGEKD_PROGRESS": "0"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekd", "run", str(pipeline), "--out",
                           str(out), "--no-gate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3600)
    wall = time.perf_counter() - start
    report_path = out / "report.json"
    if proc.returncode not in (0, 3) or not report_path.is_file():
        raise RuntimeError(f"edgekd run {pipeline} exited {proc.returncode}: "
                           f"{proc.stderr[-1500:]}")
    report = json.loads(report_path.read_text())
    return {"wall_s": wall, "exit_code": proc.returncode, "verdict": report["verdict"],
            "stages": {s["kind"]: {"status": s["status"], "duration_s": s["duration_s"]}
                       for s in report["stages"]}}


def cold_and_warm(pipeline: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return {"pipeline": str(pipeline.relative_to(ROOT) if pipeline.is_relative_to(ROOT)
                            else pipeline),
            "cold": edgekd_run(pipeline, out), "warm": edgekd_run(pipeline, out)}


def stage_seconds(args, rec, data: dict, teacher: Path, tag: str, epochs: int,
                  **distill) -> float:
    """Wall time of the distill stage alone (teacher loaded from `teacher`), in a fresh run
    directory so that nothing, the teacher-output cache included, is reused."""
    doc = pipeline_doc(rec, data, rec.students[0], 0, ["distill"], teacher)
    doc["stages"][0].update(epochs=epochs, **distill)
    out = args.work / ("tiny" if args.tiny else "full") / rec.dataset / "epoch-cost" / tag
    shutil.rmtree(out, ignore_errors=True)
    run = run_pipeline(doc, out)
    shutil.rmtree(out, ignore_errors=True)
    return next(r.duration_s for r in run.records if r.kind == "distill")


def epoch_times(args, rec, data: dict) -> dict:
    """Seconds per epoch of each mode: the distill stage timed at two epoch counts, the
    difference divided by the extra epochs (fixed costs such as the teacher-cache fill, test
    predictions and saving cancel out and are reported apart). Plain training is the hard-label
    baseline the stage trains when `baseline: true`: the stage's extra time with it on."""
    first = rec.students[0]
    main_run = student_run(args.work, rec, data, first, 0, ["distill"], args.tiny)
    teacher = next(r.result.artifacts["teacher"].path for r in main_run.records
                   if r.kind == "teacher")
    lo, hi = EPOCHS["tiny" if args.tiny else "full"][rec.dataset]
    # Untimed: the first stage run in a process pays imports and kernel set-up.
    stage_seconds(args, rec, data, teacher, "warm-up", lo, baseline=False, **MODES["online"])
    runs = {f"{m}-{e}": (e, {"baseline": False, **o}) for m, o in MODES.items() for e in (lo, hi)}
    runs["cached+baseline"] = (hi, {"baseline": True, **MODES["cached"]})
    seen: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS["tiny" if args.tiny else "full"]):  # interleaved, then the minimum
        for name, (epochs, options) in runs.items():
            seen[name].append(stage_seconds(args, rec, data, teacher, name, epochs, **options))
    seconds = {name: min(times) for name, times in seen.items()}
    with_baseline = seconds["cached+baseline"]
    per_epoch = {m: (seconds[f"{m}-{hi}"] - seconds[f"{m}-{lo}"]) / (hi - lo) for m in MODES}
    per_epoch["plain"] = (with_baseline - seconds[f"cached-{hi}"]) / hi
    fixed = {m: seconds[f"{m}-{lo}"] - lo * per_epoch[m] for m in MODES}
    plain = per_epoch["plain"]
    valid = plain > 0 and all(v > 0 for v in per_epoch.values())
    return {
        "epochs_timed": [lo, hi], "stage_seconds": seconds, "stage_seconds_all": seen,
        "seconds_per_epoch": per_epoch, "fixed_s": fixed, "valid": valid,
        "online_over_plain": per_epoch["online"] / plain if valid else None,
        "cached_over_plain": per_epoch["cached"] / plain if valid else None,
        "alpha0_over_plain": per_epoch["alpha0"] / plain if valid else None,
        "stage_epochs": rec.distill_epochs,
    }


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    report = Report("pipeline_cost", args)
    setting = "tiny" if args.tiny else "full"
    pipeline = tiny_mobile(args.work / setting) if args.tiny else MOBILE
    cost = cold_and_warm(pipeline, args.work / setting / "mobile-cost")
    kinds = list(cost["cold"]["stages"])
    report.add_table(
        f"Wall time of `edgekd run {cost['pipeline']}` (s; stage times from report.json)",
        ["run", "total (process)", *kinds, "verdict"],
        [[name, cost[name]["wall_s"],
          *[f"{cost[name]['stages'][k]['duration_s']:.2f} ({cost[name]['stages'][k]['status']})"
            for k in kinds], cost[name]["verdict"]] for name in ("cold", "warm")])
    epochs = {}
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        epochs[dataset] = epoch_times(args, recipe(dataset, args.tiny), data)
    if epochs:
        report.add_table(
            "Distillation epoch time (s per epoch of the distill stage; plain = the hard-label "
            "baseline; fixed = the stage's per-run cost, cache fill included)",
            ["dataset", "teacher online", "teacher cached", "alpha 0 (KD off)", "plain",
             "online / plain", "cached / plain", "alpha 0 / plain", "fixed s (online, cached)"],
            [[d, e["seconds_per_epoch"]["online"], e["seconds_per_epoch"]["cached"],
              e["seconds_per_epoch"]["alpha0"], e["seconds_per_epoch"]["plain"],
              _x(e["online_over_plain"]), _x(e["cached_over_plain"]),
              _x(e["alpha0_over_plain"]),
              f"{e['fixed_s']['online']:.2f}, {e['fixed_s']['cached']:.2f}"]
             for d, e in epochs.items()])
        for d, e in epochs.items():
            if not e["valid"]:
                report.note(f"{d}: a per-epoch time came out <= 0 (load from elsewhere during "
                            "the run); its ratios are left out")
    report.doc["results"] = {"mobile": cost, "epochs": epochs}
    report.write()
    return report.doc


if __name__ == "__main__":
    main(sys.argv[1:])
