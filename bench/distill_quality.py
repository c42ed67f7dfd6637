"""Distillation quality: teacher vs KD student vs hard-label student, over seeds and sizes.

    python -m bench.distill_quality [--tiny] [--datasets digits,mnist]

For each dataset, seed and student size, edgekd's own pipeline (teacher -> distill stage)
trains the teacher, the KD student and the hard-label student of the same architecture, epochs
and seed. The smallest student is capacity-bound on purpose. Reported: test accuracy, ECE,
parameters and MACs, as mean ± sample standard deviation over the seeds. A seed fixes the data
split, the initial weights and the batch order, so the spread includes the split.
"""

from __future__ import annotations

import sys

from bench.common import Report, available, mean_std, parse_args, pm, recipe, student_run

FULL_SEEDS, TINY_SEEDS = (0, 1, 2), (0, 1)


def distill_metrics(work, rec, data, student, seed, tiny) -> dict:
    run = student_run(work, rec, data, student, seed, ["distill"], tiny)
    return next(r.result.metrics for r in run.records if r.kind == "distill")


def summarize(per_seed: list[dict]) -> dict:
    """mean_std of every figure the tables show, across seeds. The KD row is the KD student's
    own (`kd_accuracy`, `kd_ece`): the stage's `accuracy` is the shipped student's, which with
    `ship: best` is the hard-label one wherever that validated better."""
    per_seed = [{**m, "accuracy": m.get("kd_accuracy", m["accuracy"]),
                 "ece": m.get("kd_ece", m["ece"]),
                 "teacher_retention": m.get("kd_accuracy", m["accuracy"])
                 / m["teacher_accuracy"]} for m in per_seed]
    keys = ("teacher_accuracy", "teacher_ece", "accuracy", "ece", "baseline_accuracy",
            "baseline_ece", "kd_gain", "teacher_retention")
    out = {k: mean_std([m[k] for m in per_seed]) for k in keys}
    first = per_seed[0]
    for k in ("teacher_params", "teacher_macs", "student_params", "student_macs", "param_ratio"):
        out[k] = first[k]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    report = Report("distill_quality", args)
    seeds = TINY_SEEDS if args.tiny else FULL_SEEDS
    results: dict = {}
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        rec = recipe(dataset, args.tiny)
        results[dataset] = {"seeds": list(seeds), "teacher_epochs": rec.teacher_epochs,
                            "distill_epochs": rec.distill_epochs, "students": {}}
        for student in rec.students:
            per_seed = [distill_metrics(args.work, rec, data, student, s, args.tiny)
                        for s in seeds]
            results[dataset]["students"][student.name] = {
                "width": student.width, "depth": student.depth, "per_seed": per_seed,
                "summary": summarize(per_seed)}
    report.doc["results"] = results
    for dataset, res in results.items():
        report.add_table(f"Distillation quality, {dataset} (test accuracy and ECE, mean ± std "
                         f"over seeds {res['seeds']}; teacher {res['teacher_epochs']} epochs, "
                         f"students {res['distill_epochs']})", *rows(res))
    report.write()
    return report.doc


def rows(res: dict) -> tuple[list[str], list[list]]:
    headers = ["model", "params", "MACs", "params / teacher's", "accuracy %", "ECE %",
               "retention (KD / teacher)"]
    table = []
    students = res["students"]
    first = next(iter(students.values()))["summary"]
    table.append(["teacher", first["teacher_params"], first["teacher_macs"], "1x",
                  pm(first["teacher_accuracy"], 100), pm(first["teacher_ece"], 100), "-"])
    for name, entry in students.items():
        s = entry["summary"]
        ratio = f"1/{s['param_ratio']:.0f}"
        table.append([f"{name} KD", s["student_params"], s["student_macs"], ratio,
                      pm(s["accuracy"], 100), pm(s["ece"], 100),
                      pm(s["teacher_retention"], 100) + " %"])
        table.append([f"{name} hard labels", s["student_params"], s["student_macs"], ratio,
                      pm(s["baseline_accuracy"], 100), pm(s["baseline_ece"], 100),
                      f"KD gain {pm(s['kd_gain'], 100)} pt"])
    return headers, table


if __name__ == "__main__":
    main(sys.argv[1:])
