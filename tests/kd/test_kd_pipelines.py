"""Every shipped pipeline's layer paths exist in the models it builds (the model-aware
check the distill stage runs at start; `edgekd validate` stays torch-free)."""

from pathlib import Path

import pytest

from edgekd.config import load_pipeline
from edgekd.kd.methods import layer_errors
from edgekd.models import build

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


def network_only(spec):
    """The spec without its weights file: shipped pipelines name files the user provides."""
    return spec.model_copy(update={"weights": None, "checkpoint": None})


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_layer_paths_exist(path):
    pipeline = load_pipeline(path)
    stage = pipeline.stage("distill")
    meta = {"num_classes": 10, "in_channels": 1, "input_shape": [1, 8, 8],
                  "mean": [0.0], "std": [1.0]}
    student = build(network_only(pipeline.student), meta, path.parent)
    teacher = build(network_only(pipeline.teacher), meta, path.parent, role="teacher")
    assert layer_errors(stage, student, teacher) == []
