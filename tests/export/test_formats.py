"""The export-format table is the one place that knows a format; everything else reads it."""

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from edgekd.config import ExportFormat
from edgekd.devices import runner
from edgekd.export import runtimes
from edgekd.export.formats import FORMAT_NAMES, FORMATS, RUNTIMES, SUFFIXES, runtime_for


def test_device_runner_copy_matches_the_table():
    assert runner.SUFFIX_RUNTIMES == {r.suffix: r.device_runtimes for r in RUNTIMES.values()}


def test_config_takes_exactly_the_table_formats():
    assert get_args(ExportFormat) == FORMAT_NAMES == tuple(FORMATS)


@pytest.mark.parametrize("name", FORMATS)
def test_each_entry_is_consistent(name):
    fmt = FORMATS[name]
    assert fmt.name == name and fmt.runtime in RUNTIMES
    assert Path(fmt.filename).suffix == fmt.suffix == RUNTIMES[fmt.runtime].suffix
    if fmt.fp32_sibling is not None:
        sibling = FORMATS[fmt.fp32_sibling]
        assert fmt.precision == "int8" and sibling.precision == "fp32"
        assert sibling.runtime == fmt.runtime
    if fmt.estimate_from is not None:
        twin = FORMATS[fmt.estimate_from]
        assert twin.suffix == ".onnx" and twin.precision == fmt.precision


def test_artifact_and_file_names_are_unique():
    assert len({f.artifact for f in FORMATS.values()}) == len(FORMATS)
    assert len({f.filename for f in FORMATS.values()}) == len(FORMATS)


def test_every_function_the_table_names_exists():
    functions = [f.write for f in FORMATS.values()]
    functions += [fn for r in RUNTIMES.values() for fn in (r.evaluate, r.op_counts,
                                                           r.output_scale)]
    for fn in functions:
        module, _, name = fn.__qualname__.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), fn.__qualname__


def test_unknown_suffix_is_an_error_never_a_fallback(tmp_path):
    model = tmp_path / "student.mlmodel"
    model.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"student\.mlmodel: unknown model format '\.mlmodel'"):
        runtime_for(model)
    with pytest.raises(ValueError, match="unknown model format"):
        runtimes.logits(model, np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="unknown model format"):
        runtimes.output_scale(model)
    assert ".mlmodel" not in SUFFIXES


def test_device_runner_refuses_an_unknown_suffix(tmp_path):
    model = tmp_path / "student.mlmodel"
    model.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, runner.__file__, str(model), "--runs", "1"],
                          capture_output=True, text=True, timeout=120)
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["ok"] is False and "no runtime takes .mlmodel files" in doc["error"]


@pytest.mark.parametrize("suffix, content, why", [
    (".tflite", b"", "the file is empty"),
    (".tflite", b"\x00" * 64, "not a TFLite flatbuffer"),
    (".onnx", b"\xff" * 64, "not an ONNX model"),
    (".pte", b"PK\x03\x04" + b"\x00" * 60, "not an ExecuTorch program"),
    # an ExecuTorch header saying 100 bytes of program and 100 of segments at offset 128
    (".pte", b"\x3c\x00\x00\x00ET12eh00" + (32).to_bytes(4, "little")
     + b"".join(n.to_bytes(8, "little") for n in (100, 128, 100)) + b"\x00" * 24,
     "truncated: 64 bytes, where its header says 228"),
])
def test_a_file_that_is_not_a_model_is_said_so_before_any_runtime_sees_it(tmp_path, suffix,
                                                                           content, why):
    from edgekd.export.formats import not_a_model

    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    assert why in not_a_model(path)
