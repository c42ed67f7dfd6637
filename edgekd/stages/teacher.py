"""teacher: the user's checkpoint loaded, or a teacher trained on the data by the pipeline.

Either way it is saved in edgekd's model format and cached like any stage; the stages that
need it load it from this stage's `teacher` artifact.
"""

from __future__ import annotations

from edgekd import parallel
from edgekd.artifacts import Artifact, StageResult
from edgekd.config import TeacherConfig
from edgekd.context import Context
from edgekd.kd.methods import hard_labels
from edgekd.kd.train import Hyperparameters, fit, predict, set_seed, throughput
from edgekd.metrics import accuracy, expected_calibration_error
from edgekd.models import build, count_macs, count_params, load_model, save_model
from edgekd.schema import ConfigError


def run(cfg: TeacherConfig, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """Load the user's teacher checkpoint or train one; artifact `teacher` (edgekd's model
    format), metrics accuracy, ece, params, macs on the test split.

    Raises ConfigError naming `teacher.checkpoint` when the file is missing or does not fit
    the architecture."""
    splits, meta = ctx.splits(), ctx.meta()
    out = ctx.stage_dir("teacher")
    history = {}
    if cfg.checkpoint is not None:
        model = _load_checkpoint(cfg, ctx, meta)
    else:
        set_seed(ctx.pipeline.seed)  # the initial weights are part of what the seed fixes
        model = build(cfg, meta["num_classes"], meta["in_channels"], meta["mean"], meta["std"])
        settings = Hyperparameters.of(cfg.train, ctx.pipeline.data)
        history["teacher"] = fit(model, hard_labels, splits, settings, ctx.pipeline.seed,
                                 out / "teacher.ckpt", "teacher", parallel=parallel.active(),
                                 compute=ctx.compute())
    path = out / "teacher.pt"
    parallel.on_leader(lambda: save_model(model, cfg, meta, path))
    logits = predict(model, splits.test, device=ctx.compute().device)
    metrics = {
        "accuracy": accuracy(logits, splits.y_test),
        "ece": expected_calibration_error(logits, splits.y_test),
        "params": count_params(model),
        "macs": count_macs(model, splits.input_shape),
    }
    return StageResult({"teacher": Artifact.of("teacher", path, "torch")}, metrics,
                       summary={"teacher accuracy": metrics["accuracy"]}, history=history,
                       info={**ctx.training_info(), **(
                           {"images_per_s": throughput(history["teacher"])} if history else {})})


def _load_checkpoint(cfg: TeacherConfig, ctx: Context, meta: dict):
    path = ctx.resolve(cfg.checkpoint)
    if not path.is_file():
        raise ConfigError([f"{ctx.source}: teacher.checkpoint: file {path} not found"])
    try:
        return load_model(path, cfg, meta)
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        first = (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0])
        raise ConfigError([f"{ctx.source}: teacher.checkpoint: {path} does not fit "
                           f"arch {cfg.arch}: {first}"]) from None
