"""One tiny real pipeline on the built-in digits, run stage by stage through the stage table.

Each fixture runs one stage once per session with `STAGES[kind].run(cfg, inputs, ctx)`, as the
loop does, and hands its StageResult to the fixtures of the stages that need it. The PTQ
branch runs in a pipeline (and run folder) of its own on the same teacher and distilled
student: a stage reads its inputs, not the folders of the stages before it.
"""

from __future__ import annotations

import pytest
from stagekit import PTQ, QAT, make_context, run_stage

from edgekd.artifacts import StageResult
from edgekd.config import DataConfig
from edgekd.context import Context
from edgekd.data import load


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
