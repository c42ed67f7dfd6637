"""What every benchmark shares: arguments, data, the pipelines it runs, latency, JSON, tables.

The benchmarks build their models with edgekd's own pipeline (`edgekd.pipeline.execute`), in
run directories under `bench/.work/`, so the stage cache does the sharing: the first script
that needs MNIST's distilled and exported student trains it, the next ones find it cached.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("EDGEKD_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
MNIST_DIR = Path(os.environ.get("EDGEKD_MNIST", ROOT.parent / "shared" / "data" / "mnist-t10k"))
MOBILE = ROOT / "pipelines" / "mobile.yaml"
DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class Student:
    """A student size: `cnn` with `width` channels in its first block and `depth` blocks."""

    width: int
    depth: int

    @property
    def name(self) -> str:
        return f"cnn-w{self.width}d{self.depth}"

    def config(self) -> dict:
        return {"arch": "cnn", "width": self.width, "depth": self.depth}


@dataclass(frozen=True)
class Recipe:
    """How one dataset is distilled, quantized and exported for the benchmarks."""

    dataset: str
    teacher: dict
    teacher_epochs: int
    students: tuple[Student, ...]
    """The first is the one quantized, exported and timed; the last is capacity-bound."""
    distill_epochs: int
    qat_epochs: int
    data: dict = field(default_factory=dict)


def recipe(dataset: str, tiny: bool) -> Recipe:
    """digits: pipelines/mobile.yaml's own models and schedule, at the digits' own 8x8 (the
    demo's 24x24 upscale and the teacher's resize are left out: these are the tiny students
    of the per-call floor). MNIST: a fixed cnn w32 d3 teacher on 28x28 inputs (its own, so
    that a change to the demo does not change these figures or their cost) and a deeper
    student that is >= 10x smaller than it."""
    mobile = yaml.safe_load(MOBILE.read_text())
    stages = {s["kind"]: s for s in mobile["stages"]}
    teacher = {k: v for k, v in mobile["teacher"].items() if k not in ("train", "input")}
    if dataset != "digits":
        teacher = {"arch": "cnn", "width": 32, "depth": 3}
    if dataset == "digits":
        main = Student(mobile["student"]["width"], mobile["student"]["depth"])
        epochs = (mobile["teacher"]["train"]["epochs"], stages["distill"]["epochs"],
                  stages["quantize"]["epochs"])
        students = (main, Student(4, 2))
    else:
        students = (Student(8, 3), Student(4, 2))
        epochs = (10, 12, 3)
    if tiny:
        epochs = (2, 2, 1)
    return Recipe(dataset, teacher, epochs[0], students, epochs[1], epochs[2])


def parse_args(doc: str, argv: list[str] | None = None,
               extra: list[tuple[str, dict]] | None = None) -> argparse.Namespace:
    """The options every benchmark takes (plus `extra` ones)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", "--tiny", dest="tiny", action="store_true",
                        help="smoke setting for CI: tiny epochs and runs (seconds to a "
                             "minute); figures show the tables' shape only")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated subset of: " + ", ".join(DATASETS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="working files (pipeline runs, data) [bench/.work]")
    for flag, options in extra or []:
        parser.add_argument(flag, **options)
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(sorted(unknown))}; known: "
                     f"{', '.join(DATASETS)}")
    args.work = args.work.resolve()
    return args


def map_seeds(fn, seeds, jobs: int) -> list:
    """`fn(seed)` for each seed, in seed order, in `jobs` forked processes at once (this
    process when 1). For benchmarks whose seeds are independent and train on one torch thread
    each: a 2-core machine then runs two seeds side by side. `fn` may close over anything
    (the children are forked: nothing is pickled but the seed and the result). Fork after
    CUDA is initialised breaks CUDA: callers on a GPU pass jobs=1."""
    seeds = list(seeds)
    if jobs <= 1 or len(seeds) <= 1:
        return [fn(seed) for seed in seeds]
    import multiprocessing

    global _SEED_JOB
    _SEED_JOB = fn
    with multiprocessing.get_context("fork").Pool(min(jobs, len(seeds))) as pool:
        return pool.map(_seed_job, seeds, chunksize=1)


_SEED_JOB = None


def _seed_job(seed):
    return _SEED_JOB(seed)


def jobs_option(default: int = 2) -> tuple[str, dict]:
    """The `--jobs` option of benchmarks that run their seeds side by side (map_seeds)."""
    return ("--jobs", {"type": int, "default": min(default, os.cpu_count() or 1),
                       "help": f"seeds trained at once, one process each [{default}, at most "
                               "the CPU count]"})


def available(datasets: list[str], work: Path, tiny: bool) -> dict[str, dict]:
    """The pipeline `data:` block of each dataset that is present; MNIST is skipped with a
    message when ../shared/data/mnist-t10k is absent (the product never needs it)."""
    found = {}
    for name in datasets:
        if name == "digits":
            found[name] = {"source": "digits"}
        else:
            path = mnist_npz(work, tiny)
            if path is None:
                print(f"skipping MNIST: {MNIST_DIR} not found (set EDGEKD_MNIST to its folder)")
                continue
            # 7,000 train / 1,000 val / 2,000 test, stratified, seeded by the pipeline seed.
            found[name] = {"source": "npz", "path": str(path),
                           "split": {"val": 0.1, "test": 0.2}}
    return found


def _idx(path: Path) -> np.ndarray:
    """An idx file (the original MNIST format): magic, dims, then the raw array."""
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist_npz(work: Path, tiny: bool) -> Path | None:
    """MNIST's test set as an .npz (x uint8 N x 28 x 28, y) the way a user brings data;
    `tiny` keeps a seeded, stratified 1,500-sample subset. Written once, so its hash (and
    with it every cached stage) stays the same."""
    images = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    labels = MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        return None
    path = work / "data" / ("mnist-tiny.npz" if tiny else "mnist.npz")
    if not path.is_file():
        x, y = _idx(images), _idx(labels).astype(np.int64)
        if tiny:
            rng = np.random.default_rng(0)
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:150]
                                           for c in range(10)]))
            x, y = x[keep], y[keep]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)
    return path


def pipeline_doc(rec: Recipe, data: dict, student: Student, seed: int, stages: list[str],
                 teacher_checkpoint: Path | None = None) -> dict:
    """A pipeline file for one dataset / student / seed, with the stages asked for."""
    mobile = yaml.safe_load(MOBILE.read_text())
    by_kind = {s["kind"]: {k: v for k, v in s.items() if k != "budget"} for s in mobile["stages"]}
    by_kind["distill"]["epochs"] = rec.distill_epochs
    by_kind["quantize"]["epochs"] = rec.qat_epochs
    by_kind["export"]["formats"] = ["onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8",
                                    "pte_fp32", "pte_int8"]
    teacher = dict(rec.teacher)
    if teacher_checkpoint is not None:
        teacher["checkpoint"] = str(teacher_checkpoint)
    else:
        teacher["train"] = {**mobile["teacher"]["train"], "epochs": rec.teacher_epochs}
    return {"name": f"{rec.dataset}-s{seed}-{student.name}", "seed": seed, "data": data,
            "teacher": teacher, "student": student.config(), "target": "local",
            "stages": [by_kind[k] for k in stages]}


def run_pipeline(doc: dict, run_dir: Path):
    """Run a pipeline document with edgekd (no gating: the benchmarks only read figures);
    returns the Run. A stage that fails is an error here."""
    from edgekd.pipeline import execute

    run_dir.mkdir(parents=True, exist_ok=True)
    source = run_dir / "pipeline.yaml"
    source.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = execute(source, out=run_dir, gate=False, log=lambda m: print(f"  {doc['name']} {m}"))
    failed = [r for r in run.records if r.status == "failed"]
    if failed:
        raise RuntimeError(f"{doc['name']}: {failed[0].kind} failed: {failed[0].error}")
    return run


def run_dir(work: Path, rec: Recipe, seed: int, student: Student, tiny: bool) -> Path:
    return work / ("tiny" if tiny else "full") / rec.dataset / f"s{seed}-{student.name}"


def student_run(work: Path, rec: Recipe, data: dict, student: Student, seed: int,
                stages: list[str], tiny: bool):
    """The pipeline for one student: the first student of a recipe trains the teacher, the
    others load that teacher's checkpoint (so one teacher per seed serves every size)."""
    first = rec.students[0]
    checkpoint = None
    if student != first:
        checkpoint = run_dir(work, rec, seed, first, tiny) / "teacher" / "teacher.pt"
        if not checkpoint.is_file():
            student_run(work, rec, data, first, seed, ["distill"], tiny)
    doc = pipeline_doc(rec, data, student, seed, stages, checkpoint)
    return run_pipeline(doc, run_dir(work, rec, seed, student, tiny))


@dataclass
class Built:
    """The main student of one dataset, distilled, QAT-quantized and exported."""

    dataset: str
    run: object
    splits: object

    def artifact(self, name: str) -> Path:
        for record in self.run.records:
            if record.result is not None and name in record.result.artifacts:
                return record.result.artifacts[name].path
        raise KeyError(name)

    def metrics(self, kind: str) -> dict:
        return next(r.result.metrics for r in self.run.records if r.kind == kind)


def build_main(dataset: str, data: dict, work: Path, tiny: bool) -> Built:
    """Seed 0, first student, stages distill -> quantize -> export (cached after the first
    benchmark that asks)."""
    from edgekd.data import load

    rec = recipe(dataset, tiny)
    run = student_run(work, rec, data, rec.students[0], 0, ["distill", "quantize", "export"],
                      tiny)
    return Built(dataset, run, load(run.pipeline.data, run.pipeline.seed))


# ---- latency ---------------------------------------------------------------------------------

EAGER = Path(__file__).with_name("eager.py")


def latency(path: Path, threads: int, runs: int, warmup: int) -> dict:
    """One fresh-process measurement at batch 1: edgekd's device runner for .onnx / .tflite /
    .pte (through `edgekd.devices.measure.profile` on the `local` profile), bench/eager.py for a
    PyTorch model file."""
    if path.suffix in (".onnx", ".tflite", ".pte"):
        from edgekd.devices.measure import profile
        from edgekd.devices.profiles import load_profile

        result = profile(path, load_profile("local"), runs=runs, warmup=warmup, threads=threads)
        return {**result.metrics, "runtime": result.runtime, "suspect": result.suspect}
    proc = subprocess.run([sys.executable, str(EAGER), str(path), "--threads", str(threads),
                           "--runs", str(runs), "--warmup", str(warmup)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{path}: eager timing failed: {proc.stderr[-500:]}")
    return {**json.loads(lines[-1]), "suspect": []}


def latency_rounds(files: dict[str, Path], threads: int, runs: int, warmup: int,
                   rounds: int) -> dict[str, dict]:
    """Each file measured `rounds` times, the files interleaved within a round so that a burst
    of load from elsewhere hits them alike; p50 / p90 are the medians over the rounds."""
    seen: dict[str, list[dict]] = {name: [] for name in files}
    for _ in range(rounds):
        for name, path in files.items():
            seen[name].append(latency(path, threads, runs, warmup))
    out = {}
    for name, results in seen.items():
        out[name] = {
            "p50_ms": statistics.median(r["latency_ms_p50"] for r in results),
            "p90_ms": statistics.median(r["latency_ms_p90"] for r in results),
            "p50_ms_rounds": [r["latency_ms_p50"] for r in results],
            "runtime": results[0].get("runtime"),
            "suspect": sorted({s for r in results for s in r.get("suspect", [])}),
        }
    return out


# ---- output ----------------------------------------------------------------------------------

def environment() -> dict:
    """edgekd's environment record plus what decides CPU timings here."""
    from edgekd.report import environment as edgekd_environment

    env = edgekd_environment()
    env["affinity_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else None
    try:
        env["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        env["loadavg_1m"] = None
    return env


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats keep 4 significant digits."""
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
            if len(values) > 1 else 0.0, "n": len(values), "values": [float(v) for v in values]}


def pm(stat: dict, scale: float = 1.0, digits: int = 2) -> str:
    """`mean ± std` of a mean_std record, e.g. accuracy in percent."""
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


class Report:
    """Collects a benchmark's tables and figures and writes them as one JSON document."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args = name, args
        self.started = time.time()
        self.doc: dict = {"benchmark": name, "setting": "quick" if args.tiny else "full",
                          "datasets": list(args.datasets), "tables": [], "notes": []}

    def add_table(self, title: str, headers: list[str], rows: list[list]) -> None:
        text = table(headers, rows)
        print(f"\n### {title}\n\n{text}\n", flush=True)
        self.doc["tables"].append({"title": title, "markdown": text})

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.doc["notes"].append(text)

    def write(self) -> Path:
        self.doc["environment"] = environment()
        self.doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.doc["wall_s"] = round(time.time() - self.started, 1)
        path = self.args.results / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=_jsonable) + "\n")
        tmp.replace(path)
        print(f"wrote {path} ({self.doc['wall_s']} s)")
        return path


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
