"""The one orchestration loop: run stages in order, reuse cached ones, gate, record.

Every stage's output is kept under `runs/<name>/<kind>/` with a `stage.json` naming the cache
key it was made for. A rerun reuses a stage whose key and files are intact, so after a failed
gate (or a crash) only the unfinished work runs again. Budgets are not part of the key: a
changed budget re-gates cached results without retraining. Under torchrun, this loop runs on
rank 0 and hands data-parallel stages to the other ranks (`serve` is their side).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from edgekd import budgets, exits, files, memory, parallel
from edgekd.artifacts import StageResult, cache_key
from edgekd.config import Pipeline
from edgekd.context import Context
from edgekd.files import Busy, check_writable, exclusive, full_disk, write_json
from edgekd.inputs import content_hash, model_files
from edgekd.schema import ConfigError
from edgekd.stages import STAGES


class Refused(ConfigError):
    """A stage refused its config before touching its folder (edgekd.stages.StageSpec.check):
    the run stops as for an invalid pipeline file, exit 2 with nothing written; the stages
    finished before it keep their results."""


@dataclass
class StageRecord:
    """One stage as the report shows it."""

    kind: str
    key: str
    status: str = "pending"  # done | cached | failed | gate_failed | not_run
    duration_s: float = 0.0
    result: StageResult | None = None
    checks: list[budgets.Check] = field(default_factory=list)
    error: str | None = None


@dataclass
class Run:
    """One execution of a pipeline file: its stage records and how it ended."""

    pipeline: Pipeline
    source: Path
    run_dir: Path
    records: list[StageRecord] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    gate: bool = True
    traceback: str = ""
    exit_code: int = exits.OK
    message: str = ""

    @property
    def verdict(self) -> str:
        """"pass" when the run ended cleanly and every check passed, else "fail"."""
        failed = any(c for r in self.records for c in r.checks if not c.passed)
        return "pass" if self.exit_code == exits.OK and not failed else "fail"


def load(source: Path, device: str | None = None) -> Pipeline:
    """Read and validate a pipeline file: the schema, its target device and its data paths,
    every problem at once (ConfigError, one line each). Relative paths in the file are taken
    from the file's folder; the returned pipeline's data paths are resolved so. `device`
    (the CLI's --device) replaces the file's `device:`."""
    from edgekd.devices.profiles import check_target
    from edgekd.schema import ConfigError, parse, path_problem, read_yaml

    source = Path(source)
    raw = read_yaml(source)
    problems: list[str] = []
    try:
        pipeline = parse(Pipeline, raw, str(source))
    except ConfigError as exc:
        problems, pipeline = exc.lines, None
    target = pipeline.target if pipeline else (raw or {}).get("target", "local") \
        if isinstance(raw, dict) else None
    if isinstance(target, str) and not path_problem(target):  # else refused by parse
        try:
            check_target(target, source, pipeline.profiled_suffixes() if pipeline else ())
        except ConfigError as exc:
            problems += exc.lines
    from edgekd.config.pipeline import device_problem

    if device is not None and device_problem(device):
        problems.append(f"--device: {device_problem(device)}")
    elif device is not None and pipeline is not None:
        pipeline = pipeline.model_copy(update={"device": device})
    if pipeline is not None:
        resolved = {}
        for name, path in pipeline.data.paths().items():
            resolved[name] = path if path.is_absolute() else source.parent / path
            problem = files.kind_problem(resolved[name], pipeline.data.path_kind())
            if problem:
                problems.append(f"{source}: data.{name}: {resolved[name]} {problem} (relative "
                                "paths are taken from the pipeline file's folder)")
        pipeline = pipeline.model_copy(update={"data": pipeline.data.model_copy(
            update=resolved)})
    if problems:
        raise ConfigError(problems)
    return pipeline


def stage_configs(pipeline: Pipeline) -> list[tuple[str, object]]:
    """The teacher (trained or loaded like any stage) followed by the pipeline's stages."""
    return [("teacher", pipeline.teacher)] + [(s.kind, s) for s in pipeline.stages]


def _keys(pipeline: Pipeline, source: Path, dkey: str) -> dict[str, str]:
    """Cache key of every stage: its config, the pipeline fields it reads, the content of every
    checkpoint file those name, and the keys of everything before it."""
    keys: dict[str, str] = {}
    chain = [dkey, str(pipeline.seed)]
    for kind, cfg in stage_configs(pipeline):
        config = cfg.model_dump(mode="json", exclude=set(STAGES[kind].settles))
        inputs = list(chain)
        for name in STAGES[kind].reads:
            value = getattr(pipeline, name)
            config[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) \
                else value
            if name == "target":  # a name stands for a file: its content is what counts
                from edgekd.devices.profiles import check_target

                inputs.append(check_target(pipeline.target, source).read_text())
        # The content of every model file the stage reads (weights, checkpoints, a module's
        # .py, a Hugging Face directory), not just its name: a retrained checkpoint or an
        # edited module must invalidate the cache.
        inputs += [content_hash(Path(p), source) for p in model_files(config)]
        keys[kind] = cache_key(kind, config, inputs)
        chain.append(keys[kind])
    return keys


def _with_inputs(key: str, inputs: dict[str, StageResult]) -> str:
    """`key` extended by the content (SHA-256) of every file the stage consumes from the
    stages before it: a teacher that was trained again, to other weights, makes every
    student distilled from the old one stale, whatever the configs say."""
    hashes = sorted(f"{kind}/{name}={a.sha256}" for kind, r in inputs.items()
                    for name, a in r.artifacts.items())
    return cache_key("inputs", {"key": key}, hashes) if hashes else key


def _cached(run_dir: Path, kind: str, key: str) -> StageResult | None:
    """The stage's recorded result when its key matches and its files are intact; None for
    anything else, a damaged or hand-edited stage.json included (the stage then runs)."""
    path = run_dir / kind / "stage.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
        result = StageResult.from_dict(doc["result"], run_dir)
        if doc.get("key") != key or not all(a.intact() for a in result.artifacts.values()):
            return None
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return None
    return result


def _claim(stage_dir: Path, key: str, fresh: bool) -> None:
    """Mark `stage_dir` as working on `key`; epoch checkpoints of another key (or any, when a
    fresh start was asked for) are removed so they cannot be resumed by mistake."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    marker = stage_dir / "key"
    try:
        same = marker.read_bytes() == key.encode()
    except OSError:
        same = False
    if fresh or not same:
        for ckpt in stage_dir.glob("*.ckpt"):
            ckpt.unlink()
    files.write_text(marker, key)  # atomic: never through a link planted there


def execute(source: Path, out: Path | None = None, force: str | None = None,
            gate: bool = True, log=print, device: str | None = None) -> Run:
    """Run a pipeline file; returns the Run (its exit_code says how it ended). `device`
    replaces the file's `device:`.

    Raises ConfigError when the file itself is invalid, or when another run holds the run
    directory's lock (nothing has run then)."""
    pipeline = load(source, device)
    try:
        run_dir = (out or Path("runs") / pipeline.name).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise ConfigError([f"{out}: cannot be the run directory (--out): {exc}"]) from None
    run = Run(pipeline, source, run_dir, gate=gate)
    kinds = [kind for kind, _ in stage_configs(pipeline)]
    if force is not None and force not in kinds:
        raise ConfigError([f"--force {force}: {source} has no {force} stage; its stages are "
                           f"{', '.join(kinds)}"])
    _apart_from_inputs(run.run_dir, pipeline, source)
    files.refuse_foreign_folder(run.run_dir, ("report.json", "report.html", "error.log",
                                              *STAGES), pipeline.name)  # ours: resume
    check_writable(run.run_dir)  # ConfigError naming what is wrong (/proc, read-only, ...)
    try:
        with exclusive(run.run_dir / ".lock"):
            files.mark_pipeline(run.run_dir, pipeline.name)
            return _execute(run, pipeline, source, force, log)
    except Busy as busy:
        raise ConfigError([f"{run.run_dir}: another edgekd process ({_pid(busy)}) is using "
                           f"this run directory; wait for it to finish or give another --out"]
                          ) from None


def _pid(busy: Busy) -> str:
    return f"pid {busy.pid}" if busy.pid else "its id unknown"


def _apart_from_inputs(run_dir: Path, pipeline: Pipeline, source: Path) -> None:
    """Refuse a run directory that holds one of the pipeline's inputs (its data, a checkpoint,
    weights or module file: a stage could overwrite or delete it) or lies inside a data
    folder (it would be read as data). Raises ConfigError naming both."""
    base = source.parent.absolute()
    data = [getattr(pipeline.data, name, None) for name in ("path", "train", "val", "test")]
    inputs = [(f"data.{name}", base / Path(value).expanduser())
              for name, value in zip(("path", "train", "val", "test"), data, strict=True)
              if value]
    inputs += [(str(p), base / Path(p).expanduser()) for p in model_files(
        {"teacher": pipeline.teacher.model_dump(mode="json"),
         "student": pipeline.student.model_dump(mode="json"),
         "stages": [s.model_dump(mode="json") for s in pipeline.stages]})]
    for what, path in inputs:
        path = path.resolve()
        if path.is_relative_to(run_dir):
            raise ConfigError([f"{run_dir}: the run directory (--out) holds {what} ({path}); "
                               f"a run would overwrite it: give another --out"])
        if path.is_dir() and run_dir.is_relative_to(path) and what.startswith("data."):
            raise ConfigError([f"{run_dir}: the run directory (--out) is inside {what} "
                               f"({path}) and would be read as data: give another --out"])


def _execute(run: Run, pipeline: Pipeline, source: Path, force: str | None, log) -> Run:
    """execute's body, with the run directory locked."""
    from edgekd.data import data_key

    dkey = data_key(pipeline.data, pipeline.seed)
    keys = _keys(pipeline, source, dkey)
    ctx = Context(pipeline, source, run.run_dir, dkey)
    kinds = [k for k, _ in stage_configs(pipeline)]
    forced_from = kinds.index(force) if force else len(kinds)
    if forced_from == 0 or _cached(run.run_dir, "teacher", keys["teacher"]) is None:
        _preflight(ctx)
    results: dict[str, StageResult] = {}
    for index, (kind, cfg) in enumerate(stage_configs(pipeline)):
        record = StageRecord(kind, keys[kind])
        run.records.append(record)
        try:
            going = _run_stage(run, ctx, record, cfg, results, index >= forced_from, log)
        except Refused:
            raise
        except Exception as exc:  # recorded in the report; the CLI decides how loud to be
            _fail(run, record, exc)
            going = False
        if not going:
            break
    if run.exit_code == exits.OK and run.verdict == "fail":
        run.exit_code = exits.GATE
        run.message = "budgets failed (--no-gate: all stages ran)"
    for kind, _ in stage_configs(pipeline)[len(run.records):]:
        run.records.append(StageRecord(kind, keys[kind], status="not_run"))
    return run


def _preflight(ctx: Context) -> None:
    """Before the first stage that will run: load the data and build the teacher, so that bad
    data or a bad checkpoint is one line and exit 2 (ConfigError) before anything in the run
    directory is touched. The data stays loaded for the stages; a fully cached rerun skips
    this and loads nothing."""
    with memory.refused_when_out(ctx.pipeline, ctx.source):  # one line, exit 2
        ctx.splits()
        memory.check_batches(ctx)  # too large a batch: refused before any image is read
        ctx.build_model(ctx.pipeline.teacher, "teacher", role="teacher")
        ctx.build_model(ctx.pipeline.student, "student")  # its builder fails before training


def _run_stage(run: Run, ctx: Context, record: StageRecord, cfg,
               results: dict[str, StageResult], forced: bool, log) -> bool:
    """Run or reuse one stage, then gate it. False stops the pipeline."""
    kind, spec = record.kind, STAGES[record.kind]
    started = time.perf_counter()
    inputs = {k: results[k] for k in spec.needs if k in results}
    record.key = _with_inputs(record.key, inputs)
    result = None if forced else _cached(run.run_dir, kind, record.key)
    if result is not None:
        record.status = "cached"
    else:
        budget = getattr(cfg, "budget", None)
        early = budgets.check_sizes(budget, spec.sizes(cfg, inputs, ctx)) \
            if budgets.has_size_limits(budget) else []
        if any(not c.passed for c in early):
            for check in early:
                log(f"    {check.describe()}")
            if run.gate:  # before any epoch: nothing trained, nothing cached
                record.checks = early
                return _gate_failed(run, record, kind, "before training")
        try:  # what the stage can refuse before it touches its folder
            memory.check_batches(ctx, kind)  # a batch this machine cannot hold
            ctx.check_models(inputs)  # saved models rebuilt only from what the pipeline names
            spec.check(cfg, inputs, ctx)
        except ConfigError as exc:
            raise Refused(exc.lines) from None
        _claim(run.run_dir / kind, record.key, fresh=forced)
        log(f"[{kind}] running")
        if spec.parallel:
            parallel.dispatch(_job(kind, inputs, ctx))
        result = spec.run(cfg, inputs, ctx)
        if not any("chance" in w for w in result.warnings):  # a stage may say it better
            from edgekd.metrics import chance_warnings

            result.warnings += chance_warnings(kind, result.metrics, ctx.meta()["num_classes"])
        result.compute_s = round(time.perf_counter() - started, 3)
        write_json(run.run_dir / kind / "stage.json",
                   {"kind": kind, "key": record.key,
                    "result": result.as_dict(run.run_dir)})
        record.status = "done"
    result = spec.settle(cfg, result, ctx)
    record.duration_s = time.perf_counter() - started
    record.result = results[kind] = result
    record.checks = budgets.check(run.pipeline.budget(kind), result.metrics,
                                  result.evaluated, result.measured_on, result.estimated)
    log(f"[{kind}] {record.status} in {record.duration_s:.1f} s")
    for check in record.checks:
        log(f"    {check.describe()}")
    for warning in result.warnings:
        log(f"    WARNING {warning}")
    if all(c.passed for c in record.checks) or not run.gate:
        return True
    return _gate_failed(run, record, kind)


def _gate_failed(run: Run, record: StageRecord, kind: str, when: str = "") -> bool:
    """Stop the run at `kind` for its failed checks (exit 3); always False."""
    record.status = "gate_failed"
    run.exit_code = exits.GATE
    failed = [c for c in record.checks if not c.passed]
    run.message = f"gate failed at {kind}{f' {when}' if when else ''}: " + "; ".join(
        f"{c.name} = {c.shown()[0]} (limit {c.shown()[1]})" for c in failed)
    return False


def _job(kind: str, inputs: dict[str, StageResult], ctx: Context) -> dict:
    """A stage call as plain data, for the other ranks (edgekd.parallel.dispatch); they read
    the stage's config from the same pipeline file."""
    return {"kind": kind, "source": str(ctx.source), "run_dir": str(ctx.run_dir),
            "data_key": ctx.data_key, "device": ctx.pipeline.device,
            "inputs": {k: r.as_dict() for k, r in inputs.items()}}


def serve() -> int:
    """On ranks > 0 of a torchrun launch: run the stages rank 0 dispatches; the exit code."""
    import os

    os.environ["EDGEKD_PROGRESS"] = "0"  # one progress bar: rank 0's
    for job in parallel.jobs():
        source = Path(job["source"])
        ctx = Context(load(source, job["device"]), source, Path(job["run_dir"]),
                      job["data_key"])
        inputs = {k: StageResult.from_dict(r) for k, r in job["inputs"].items()}
        cfg = dict(stage_configs(ctx.pipeline))[job["kind"]]
        STAGES[job["kind"]].run(cfg, inputs, ctx)
    return exits.OK


def _fail(run: Run, record: StageRecord, exc: Exception) -> None:
    from edgekd.console import fit
    from edgekd.devices.errors import DeviceError
    from edgekd.schema import ConfigError

    record.status = "failed"
    if isinstance(exc, ConfigError):
        run.exit_code, record.error = exits.USAGE, str(exc)
    elif isinstance(exc, DeviceError):
        run.exit_code = exits.DEVICE_UNAVAILABLE if exc.kind == "infrastructure" \
            else exits.MODEL_FAILED_ON_DEVICE
        record.error = f"device {run.pipeline.target}: {exc.kind} failure: {exc}"
        if exc.kind == "infrastructure" and run.pipeline.on_unreachable == "fail":
            record.error += " (on_unreachable: estimate would estimate instead)"
    elif memory.out_of_memory(exc):  # more than this machine has: the settings, exit 2
        run.exit_code, run.traceback = exits.USAGE, traceback.format_exc()
        record.error = memory.described(exc, run.pipeline, run.source, record.kind, run.run_dir)
    else:
        run.exit_code = exits.INTERNAL
        record.error = f"{type(exc).__name__}: {exc}"
        full = full_disk(run.run_dir, exc)
        if full:
            record.error = f"{full}; {record.error}"
        run.traceback = traceback.format_exc()
    record.error = fit(record.error)  # a value of any length from the user's files
    run.message = f"{record.kind} failed: {record.error}"
