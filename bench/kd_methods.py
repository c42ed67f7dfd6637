"""Distillation methods side by side for a capacity-bound student, against hard labels.

    python -m bench.kd_methods [--tiny] [--datasets digits,mnist] [--out PATH] [--threads 1]

One strong teacher (cnn w32 d3, 94k parameters) and one small student (cnn w4 d3, 1.7k, so it
cannot reach the teacher on MNIST by itself and any help shows). For each seed the teachers are
trained once, then every method trains the same student from the same initial weights with the
same epochs, learning rate, batch order and seed, through `edgekd.kd.methods.train_students`
(the code the distill stage runs). Methods:

- hard labels: the baseline, cross-entropy alone;
- logit KD (Hinton): alpha 0.7, T 4;
- hint (FitNets), attention transfer, relational (RKD): each on its own with cross-entropy
  (alpha 0), so the row shows what that signal alone is worth, then each added to logit KD;
- two-teacher ensemble: logit KD from the mean of the w32 d3 teacher and a cnn w16 d4 teacher;
- teacher-assistant chain: teacher -> cnn w12 d3 assistant (14k) -> student, logit KD at each
  link (its wall time includes training the assistant).

Reported per method: test accuracy, gain over the baseline of the same seed (paired), ECE,
top-1 agreement with the teacher, parameters, and wall time (teachers' training excluded;
each method computes its own teacher-output cache, as a user's run would), as mean ± sample
standard deviation over the seeds. A seed fixes the teachers' and the student's initial
weights and the batch order; the data split is the same for every seed (seed 0), so the
spread is the training's alone.

Data: MNIST's 10,000 test images (../shared/data/mnist-t10k), split 8,000 train / 2,000 test,
stratified with seed 0 (the 2,000 are the test split of the pipeline benchmarks); skipped with
a message when absent. `--tiny` runs the built-in digits (1,437 / 360) with one seed and 2
epochs, in under a minute.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import (
    Report,
    available,
    environment,
    jobs_option,
    map_seeds,
    mean_std,
    parse_args,
    pm,
)
from edgekd.config import DataConfig, DistillStage, ModelConfig, Split

TEACHER = ModelConfig(arch="cnn", width=32, depth=3)
SECOND_TEACHER = ModelConfig(arch="cnn", width=16, depth=4)
"""Ensemble partner: narrower and deeper than the teacher, so the two err differently."""
ASSISTANT = ModelConfig(arch="cnn", width=12, depth=3)
"""Teacher assistant: between teacher and student in size (about geometric middle)."""
STUDENT = ModelConfig(arch="cnn", width=4, depth=3)
SPLIT_SEED = 0

# Layer paths in edgekd's cnn (Classifier.net): net.0.2, net.0.6 and net.0.10 are the ReLUs of
# blocks 1-3 (teacher and student alike, at the same resolutions), net.2 the flattened
# penultimate features. The hinted teacher map (128 x 7 x 7) fits the teacher-output cache.
BLOCKS = ("net.0.2", "net.0.6", "net.0.10")
HINT = {"hints": [{"student": BLOCKS[-1], "teacher": BLOCKS[-1]}]}
ATTENTION = {"attention": {"pairs": [{"student": b, "teacher": b} for b in BLOCKS]}}
RELATIONAL = {"relational": {"student": "net.2", "teacher": "net.2"}}
KD = {"alpha": 0.7, "temperature": 4.0}
ALONE = {"alpha": 0.0}

METHODS: dict[str, dict | None] = {
    "hard labels (baseline)": None,
    "logit KD (Hinton)": KD,
    "hint (FitNets)": {**ALONE, **HINT},
    "attention transfer": {**ALONE, **ATTENTION},
    "relational (RKD)": {**ALONE, **RELATIONAL},
    "logit KD + hint": {**KD, **HINT},
    "logit KD + attention": {**KD, **ATTENTION},
    "logit KD + relational": {**KD, **RELATIONAL},
    "two-teacher ensemble": {**KD, "teachers": "ensemble"},
    "teacher-assistant chain": {**KD, "assistants": [ASSISTANT]},
}
"""Each method's DistillStage fields (None: hard labels alone). `teachers: ensemble` is not a
stage field: it makes the second teacher join the first (equal weights)."""


@dataclass(frozen=True)
class Setting:
    """Schedules of one setting; every method of a comparison shares the student's."""

    seeds: tuple[int, ...]
    teacher_epochs: int
    epochs: int
    """Every student and assistant, whatever the method."""
    lr: float = 0.03
    """Students' peak learning rate (one-cycle, AdamW); a tiny net trains best a little hot."""
    teacher_lr: float = 0.01
    batch_size: int = 64


FULL = Setting(seeds=(0, 1, 2), teacher_epochs=6, epochs=10)
TINY = Setting(seeds=(0,), teacher_epochs=2, epochs=2)


def load_splits(dataset: str, data: dict):
    """Train / test arrays: stratified 80 / 20, seed SPLIT_SEED. fit() wants a validation
    array to report on each epoch; nothing here selects on it, so it is a slice of the
    training set rather than samples taken away from training."""
    from edgekd.data import from_arrays, load

    cfg = DataConfig(**{**data, "split": Split(val=0.1, test=0.2)})
    s = load(cfg, SPLIT_SEED)
    x, y = np.concatenate([s.x_train, s.x_val]), np.concatenate([s.y_train, s.y_val])
    return from_arrays(x, y, x[:500], y[:500], s.x_test, s.y_test, s.classes)


def maker(splits):
    """`make(cfg, seed)`: the model `cfg` names with the weights `seed` gives it."""
    from edgekd.kd.train import set_seed
    from edgekd.models import build

    meta = splits.meta()

    def make(cfg: ModelConfig, seed: int):
        set_seed(seed)
        return build(cfg, meta)

    return make


def train_teacher(make, splits, cfg: ModelConfig, setting: Setting, seed: int, work: Path):
    from edgekd.kd.methods import hard_labels
    from edgekd.kd.train import Hyperparameters, fit

    model = make(cfg, seed)
    fit(model, hard_labels, splits,
        Hyperparameters(setting.teacher_epochs, setting.teacher_lr, setting.batch_size, 5e-4), seed,
        work / f"teacher-{cfg.width}-{cfg.depth}.ckpt", "teacher")
    return model.eval()


def run_method(name: str, fields: dict | None, make, splits, teachers: list, setting: Setting,
               seed: int, work: Path) -> dict:
    """Train the student with one method; its test figures and wall time."""
    from edgekd.kd.methods import Teacher, hard_labels, train_students
    from edgekd.kd.train import Hyperparameters, fit, predict

    work.mkdir(parents=True)
    start = time.perf_counter()
    if fields is None:
        student = make(STUDENT, seed)
        fit(student, hard_labels, splits,
            Hyperparameters(setting.epochs, setting.lr, setting.batch_size, 5e-4), seed,
            work / "baseline.ckpt", "baseline")
    else:
        fields = dict(fields)
        sources = [Teacher(teachers[0])]
        if fields.pop("teachers", None) == "ensemble":
            sources.append(Teacher(teachers[1]))
        cfg = DistillStage(kind="distill", epochs=setting.epochs, lr=setting.lr,
                           batch_size=setting.batch_size, baseline=False, **fields)
        trained = train_students(cfg, splits, sources, lambda: make(STUDENT, seed), STUDENT,
                                 lambda c: make(c, seed + 1000), seed, work)
        student = trained["student"].model
    wall = time.perf_counter() - start
    return {"method": name, "seed": seed, "wall_s": wall,
            **test_figures(predict(student, splits.x_test), splits, teachers[0])}


def test_figures(logits: np.ndarray, splits, teacher) -> dict:
    from edgekd.kd.train import predict
    from edgekd.metrics import accuracy, expected_calibration_error, top1_agreement

    return {"accuracy": accuracy(logits, splits.y_test),
            "ece": expected_calibration_error(logits, splits.y_test),
            "teacher_agreement": top1_agreement(logits, predict(teacher, splits.x_test))}


def run_seed(make, splits, setting: Setting, seed: int, work: Path) -> dict:
    """The teachers of one seed, then every method; per-method figures by name."""
    from edgekd.kd.train import predict
    from edgekd.metrics import accuracy

    start = time.perf_counter()
    teachers = [train_teacher(make, splits, cfg, setting, seed, work)
                for cfg in (TEACHER, SECOND_TEACHER)]
    out = {"seed": seed, "teacher_wall_s": time.perf_counter() - start,
           "teacher_accuracy": [accuracy(predict(t, splits.x_test), splits.y_test)
                                for t in teachers], "methods": {}}
    for i, (name, fields) in enumerate(METHODS.items()):
        result = run_method(name, fields, make, splits, teachers, setting, seed,
                            work / f"method-{i}")
        out["methods"][name] = result
        print(f"  seed {seed} {name}: accuracy {result['accuracy']:.4f} "
              f"({result['wall_s']:.1f} s)", flush=True)
    return out


def summarize(per_seed: list[dict], make) -> dict:
    """mean_std of each method's figures over the seeds; gains are paired by seed."""
    from edgekd.models import count_params

    base = [s["methods"]["hard labels (baseline)"]["accuracy"] for s in per_seed]
    student_params = count_params(make(STUDENT, 0))
    out = {}
    for name in METHODS:
        rows = [s["methods"][name] for s in per_seed]
        out[name] = {
            "accuracy": mean_std([r["accuracy"] for r in rows]),
            "gain": mean_std([r["accuracy"] - b for r, b in zip(rows, base, strict=True)]),
            "ece": mean_std([r["ece"] for r in rows]),
            "teacher_agreement": mean_std([r["teacher_agreement"] for r in rows]),
            "wall_s": mean_std([r["wall_s"] for r in rows]),
            "params": student_params,
        }
    out["teacher-assistant chain"]["assistant_params"] = count_params(make(ASSISTANT, 0))
    return out


def run_dataset(dataset: str, data: dict, setting: Setting, work: Path, jobs: int = 1) -> dict:
    """Every method over `setting.seeds`, `jobs` seeds at once (bench.common.map_seeds)."""
    from edgekd.models import count_macs, count_params

    splits = load_splits(dataset, data)
    make = maker(splits)

    def one_seed(seed: int) -> dict:
        # A fresh folder per seed: train_students resumes from checkpoints it finds, which
        # would turn a rerun's wall times into nothing.
        with tempfile.TemporaryDirectory(prefix="kd-methods-", dir=work) as tmp:
            return run_seed(make, splits, setting, seed, Path(tmp))

    per_seed = map_seeds(one_seed, setting.seeds, jobs)
    models = {"teacher": TEACHER, "second_teacher": SECOND_TEACHER, "assistant": ASSISTANT,
              "student": STUDENT}
    return {
        "samples": {"train": len(splits.y_train), "test": len(splits.y_test)},
        "seeds": list(setting.seeds), "teacher_epochs": setting.teacher_epochs,
        "epochs": setting.epochs, "lr": setting.lr, "teacher_lr": setting.teacher_lr,
        "batch_size": setting.batch_size,
        "models": {k: {**m.model_dump(mode="json", include={"arch", "width", "depth"}),
                       "params": count_params(make(m, 0)),
                       "macs": count_macs(make(m, 0), splits.input_shape)}
                   for k, m in models.items()},
        "teacher_accuracy": mean_std([s["teacher_accuracy"][0] for s in per_seed]),
        "second_teacher_accuracy": mean_std([s["teacher_accuracy"][1] for s in per_seed]),
        "teacher_wall_s": mean_std([s["teacher_wall_s"] for s in per_seed]),
        "per_seed": per_seed,
        "summary": summarize(per_seed, make),
    }


def rows(res: dict) -> tuple[list[str], list[list]]:
    headers = ["method", "accuracy %", "gain over baseline (pt)", "ECE %",
               "agreement with teacher %", "student params", "wall s"]
    table = []
    for name, s in res["summary"].items():
        params = str(s["params"])
        if "assistant_params" in s:
            params += f" (+ assistant {s['assistant_params']})"
        gain = "-" if name == "hard labels (baseline)" else pm(s["gain"], 100)
        table.append([name, pm(s["accuracy"], 100), gain, pm(s["ece"], 100),
                      pm(s["teacher_agreement"], 100), params,
                      f"{statistics.fmean(s['wall_s']['values']):.1f}"])
    return headers, table


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(__doc__, argv, extra=[
        ("--out", {"type": Path, "default": None,
                   "help": "the JSON file [RESULTS/kd_methods.json]"}),
        ("--threads", {"type": int, "default": 1,
                       "help": "torch threads [1: on a shared 2-core machine one thread is "
                               "both faster and steadier for models this small]"}),
        jobs_option()])
    import torch

    torch.set_num_threads(args.threads)
    setting = TINY if args.tiny else FULL
    report = Report("kd_methods", args)
    if args.tiny and "mnist" in args.datasets:
        args.datasets = [d for d in args.datasets if d != "mnist"] or ["digits"]
        report.note("--tiny runs digits only")
        report.doc["datasets"] = args.datasets
    results = {}
    work = args.work / "kd_methods"
    work.mkdir(parents=True, exist_ok=True)
    for dataset, data in available(args.datasets, args.work, args.tiny).items():
        print(f"{dataset}: {len(setting.seeds)} seed(s), {setting.epochs} epochs", flush=True)
        results[dataset] = run_dataset(dataset, data, setting, work, args.jobs)
    report.doc["jobs"] = args.jobs
    report.doc["results"] = results
    for dataset, res in results.items():
        m = res["models"]
        report.add_table(
            f"Distillation methods, {dataset}: student cnn w4 d3 ({m['student']['params']} "
            f"params) from teacher cnn w32 d3 ({m['teacher']['params']} params, "
            f"{pm(res['teacher_accuracy'], 100)} %); test accuracy, mean ± std over seeds "
            f"{res['seeds']}; {res['epochs']} epochs each (teachers {res['teacher_epochs']}), "
            f"lr {res['lr']}, batch {res['batch_size']}", *rows(res))
    write(report, args.out or args.results / "kd_methods.json")
    return report.doc


def write(report: Report, path: Path) -> Path:
    """Report.write, to a path of the caller's choosing (--out)."""
    doc = report.doc
    doc["environment"] = {**environment(), "torch_threads": _torch_threads()}
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["wall_s"] = round(time.time() - report.started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path} ({doc['wall_s']} s)")
    return path


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main(sys.argv[1:])
