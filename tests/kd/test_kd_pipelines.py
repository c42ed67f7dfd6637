"""Every shipped pipeline's layer paths exist in the models it builds (the model-aware
check the distill stage runs at start; `edgekd validate` stays torch-free)."""

from pathlib import Path

import pytest

from edgekd.config import load_pipeline
from edgekd.kd.methods import layer_errors
from edgekd.models import build

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_layer_paths_exist(path):
    pipeline = load_pipeline(path)
    stage = pipeline.stage("distill")
    student = build(pipeline.student, 10, 1, [0.0], [1.0])
    teacher = build(pipeline.teacher, 10, 1, [0.0], [1.0])
    assert layer_errors(stage, student, teacher) == []
