import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EDGEKD_PROGRESS", "0")
# edgekd's own cache (export checks) in a folder of this test session, shared by its tests and
# the pipelines they run, never the user's ~/.cache.
os.environ["EDGEKD_CACHE"] = tempfile.mkdtemp(prefix="edgekd-cache-")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    """tests/tiny_models.py's tiny CNN: fp32 / int8 ONNX and TFLite paths and `data`."""
    from tiny_models import cached_models

    return cached_models()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EDGEKD_TEST_DEVICE"):
        return
    skip = pytest.mark.skip(reason="needs a real device: set EDGEKD_TEST_DEVICE")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)
