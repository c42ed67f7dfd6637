import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EDGEKD_PROGRESS", "0")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EDGEKD_TEST_DEVICE"):
        return
    skip = pytest.mark.skip(reason="needs a real device: set EDGEKD_TEST_DEVICE")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)
