"""The tiny pipelines the stage tests run, and how a test runs one stage as the loop does."""

from __future__ import annotations

import json
from pathlib import Path

from edgekd.artifacts import StageResult
from edgekd.config import load_pipeline
from edgekd.context import Context
from edgekd.data import data_key
from edgekd.files import write_json
from edgekd.stages import STAGES

HEAD = """\
name: stages
seed: 0
teacher: {arch: cnn, width: 16, depth: 2, train: {epochs: 3, lr: 0.05, batch_size: 32}}
student: {arch: cnn, width: 8, depth: 2}
target: local
stages:
  - kind: distill
    epochs: 3
    lr: 0.05
    batch_size: 32
"""

QAT = HEAD + """\
  - kind: quantize
    epochs: 1
  - kind: export
    formats: [onnx_fp32, onnx_int8, tflite_fp32, tflite_int8]
  - kind: profile
    runs: 5
    warmup: 1
"""

PTQ = HEAD + """\
  - kind: quantize
    method: ptq
    calibration: {method: minmax, samples: 64}
  - kind: export
    formats: [onnx_int8, tflite_int8]
"""

NO_QUANTIZE = HEAD + """\
  - kind: export
    formats: [onnx_fp32]
"""
"""A valid pipeline with no quantize stage at all: an export stage run under it can learn
how the int8 model was made only from its quantize input."""


def make_context(folder: Path, text: str, splits) -> Context:
    """A Context for the pipeline `text` (written to folder/pipeline.yaml) on `splits`."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "pipeline.yaml"
    source.write_text(text)
    pipeline = load_pipeline(source)
    ctx = Context(pipeline, source, folder / "run", data_key(pipeline.data, pipeline.seed))
    ctx._splits = splits
    return ctx


def run_stage(kind: str, cfg, inputs: dict[str, StageResult], ctx: Context) -> StageResult:
    """One stage through the stage table, given only results of stages its entry needs, as
    the loop runs it (checked first) and hands it on (settled: edgekd.stages.StageSpec)."""
    assert set(inputs) <= set(STAGES[kind].needs), (kind, sorted(inputs))
    spec = STAGES[kind]
    spec.check(cfg, inputs, ctx)
    return spec.settle(cfg, spec.run(cfg, inputs, ctx), ctx)


def json_round_trip(result: StageResult, path: Path) -> StageResult:
    """The result as the loop caches it (stage.json through edgekd's writer) and reads it."""
    write_json(path, {"result": result.as_dict()})
    return StageResult.from_dict(json.loads(path.read_text())["result"])
