"""Fixtures: the built-in digits and a small teacher trained once per session."""

import pytest
from kdutil import train_teacher

from edgekd.config import DataConfig, ModelConfig
from edgekd.data import load


@pytest.fixture(scope="session")
def splits():
    return load(DataConfig(), seed=0)


@pytest.fixture(scope="session")
def teacher(splits, tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    return train_teacher(splits, ModelConfig(arch="cnn", width=16, depth=2), 0, path)
