"""One tiny real pipeline on the built-in digits, run stage by stage through the stage table.

Each fixture runs one stage once per session with `STAGES[kind].run(cfg, inputs, ctx)`, as the
loop does, and hands its StageResult to the fixtures of the stages that need it. The PTQ
branch reuses the same teacher and distilled student (a stage reads only its inputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.artifacts import StageResult
from edgekd.config import DataConfig, Pipeline, load_pipeline
from edgekd.context import Context
from edgekd.data import data_key, load
from edgekd.stages import STAGES

HEAD = """\
name: stages
seed: 0
teacher: {arch: cnn, width: 16, depth: 2, train: {epochs: 3, lr: 0.01}}
student: {arch: cnn, width: 8, depth: 2}
target: local
stages:
  - kind: distill
    epochs: 3
    lr: 0.02
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
    """One stage through the table, given only the inputs its entry needs."""
    assert set(inputs) <= set(STAGES[kind].needs), (kind, set(inputs))
    return STAGES[kind].run(cfg, inputs, ctx)


def config(pipeline: Pipeline, kind: str):
    return pipeline.teacher if kind == "teacher" else pipeline.stage(kind)


@pytest.fixture(scope="session")
def splits():
    return load(DataConfig(), seed=0)


@pytest.fixture(scope="session")
def qat_ctx(tmp_path_factory, splits) -> Context:
    return make_context(tmp_path_factory.mktemp("qat"), QAT, splits)


@pytest.fixture(scope="session")
def ptq_ctx(tmp_path_factory, splits) -> Context:
    return make_context(tmp_path_factory.mktemp("ptq"), PTQ, splits)


@pytest.fixture(scope="session")
def teacher(qat_ctx) -> StageResult:
    return run_stage("teacher", qat_ctx.pipeline.teacher, {}, qat_ctx)


@pytest.fixture(scope="session")
def distill(qat_ctx, teacher) -> StageResult:
    return run_stage("distill", qat_ctx.pipeline.stage("distill"), {"teacher": teacher}, qat_ctx)


@pytest.fixture(scope="session")
def quantize(qat_ctx, teacher, distill) -> StageResult:
    return run_stage("quantize", qat_ctx.pipeline.stage("quantize"),
                     {"teacher": teacher, "distill": distill}, qat_ctx)


@pytest.fixture(scope="session")
def export(qat_ctx, distill, quantize) -> StageResult:
    return run_stage("export", qat_ctx.pipeline.stage("export"),
                     {"distill": distill, "quantize": quantize}, qat_ctx)


@pytest.fixture(scope="session")
def profile(qat_ctx, export) -> StageResult:
    return run_stage("profile", qat_ctx.pipeline.stage("profile"), {"export": export}, qat_ctx)


@pytest.fixture(scope="session")
def ptq_quantize(ptq_ctx, teacher, distill) -> StageResult:
    return run_stage("quantize", ptq_ctx.pipeline.stage("quantize"),
                     {"teacher": teacher, "distill": distill}, ptq_ctx)


@pytest.fixture(scope="session")
def ptq_export(ptq_ctx, distill, ptq_quantize) -> StageResult:
    return run_stage("export", ptq_ctx.pipeline.stage("export"),
                     {"distill": distill, "quantize": ptq_quantize}, ptq_ctx)
