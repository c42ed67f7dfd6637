"""Shared fixtures of the quant tests."""

import pytest
import torch

from .models import Residual, export_onnx

SHAPE = (3, 16, 16)


@pytest.fixture(scope="session")
def fp32_residual(tmp_path_factory):
    """The Residual model as an fp32 ONNX file, exported once for every quant test."""
    torch.manual_seed(0)
    return export_onnx(Residual(), SHAPE, tmp_path_factory.mktemp("quant") / "residual.onnx")
