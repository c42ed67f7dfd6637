"""Exportability before training (edgekd.export.check): a student the pipeline cannot capture,
quantize or convert is stopped in seconds, the format and the op named, before any epoch."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgekd.cli import cli
from edgekd.config.models import ModelConfig
from edgekd.export import check as check_module
from edgekd.export.check import NotExportable, cache_key, cached_check, check
from edgekd.export.formats import FORMAT_NAMES
from edgekd.models import build
from edgekd.models.builders import Classifier

pytestmark = pytest.mark.slow

SHAPE = (1, 8, 8)
META = {"num_classes": 10, "in_channels": 1, "input_shape": list(SHAPE), "mean": [0.5],
        "std": [0.25]}

# GFNet's global filter layer (Rao et al. 2021): a learned filter in the 2-D Fourier domain.
# ONNX takes it; litert-torch cannot lower its FFT (aten._fft_r2c with a norm).
GFNET = '''
import torch
from torch import nn


class GlobalFilter(nn.Module):
    def __init__(self, channels, size):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, size, size // 2 + 1, 2) * 0.02)

    def forward(self, x):
        freq = torch.fft.rfft2(x, norm="ortho") * torch.view_as_complex(self.weight)
        return torch.fft.irfft2(freq, s=x.shape[-2:], norm="ortho")


class TinyGFNet(nn.Module):
    def __init__(self, num_classes, size):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.filter = GlobalFilter(8, size)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.filter(torch.relu(self.stem(x))).mean((2, 3)))


def gfnet(num_classes=10, size=8):
    return TinyGFNet(num_classes, size)
'''


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGEKD_CACHE", str(root))
    return root


def cnn() -> Classifier:
    torch.manual_seed(0)
    return build(ModelConfig(arch="cnn", width=8), META, Path.cwd())


def gfnet_file(folder: Path) -> Path:
    path = folder / "gfnet.py"
    path.write_text(GFNET)
    return path


def test_cnn_passes_every_format_and_the_callers_model_is_untouched():
    model = cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = check(model, SHAPE, list(FORMAT_NAMES), "ptq")
    assert list(result["steps"]) == ["torch.export", "int8 convert"] + [
        step for name in FORMAT_NAMES for step in (name, f"{name} load")]
    assert result["seconds"] >= sum(result["steps"].values()) - 0.1
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_qat_capture_and_the_qat_int8_onnx_route_pass():
    result = check(cnn(), SHAPE, ["onnx_int8"], "qat")
    assert list(result["steps"]) == ["torch.export", "qat prepare", "int8 convert",
                                     "onnx_int8", "onnx_int8 load"]


def test_an_op_litert_cannot_lower_is_named_in_seconds_and_not_cached(tmp_path, cache):
    model = build(ModelConfig(module=f"{gfnet_file(tmp_path)}:gfnet"), META, tmp_path)
    start = time.perf_counter()
    with pytest.raises(NotExportable) as caught:
        cached_check(model, model.record, SHAPE, 10, list(FORMAT_NAMES), "ptq")
    assert time.perf_counter() - start < 60
    exc = caught.value
    assert str(exc).startswith("tflite_fp32: litert-torch cannot lower aten._fft_r2c.default "
                               "(from module net.filter: GlobalFilter, at gfnet.py:12): ")
    assert "\n" not in str(exc)
    assert (exc.step, exc.op, exc.module) == ("tflite_fp32", "aten._fft_r2c.default",
                                              "net.filter")
    assert "Traceback" in exc.detail and "_fft_r2c" in exc.detail
    assert not list(cache.rglob("*.json"))  # only passes are kept


class Gate(nn.Module):
    """Skips its conv on dark images: a Python branch on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        if x.mean().item() > 0.5:
            x = self.conv(x)
        return self.head(x.expand(-1, 4, -1, -1).mean((2, 3)))


class SortPool(nn.Module):
    """Pools the top half of each row's sorted values."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        x = torch.sort(self.conv(x), dim=-1).values[..., 4:]
        return self.head(x.mean((2, 3)))


def test_a_data_dependent_branch_fails_capture_naming_the_module_and_line():
    model = Classifier(Gate(), {"mean": [0.5], "std": [0.25]})
    with pytest.raises(NotExportable) as caught:
        check(model, SHAPE, ["onnx_fp32"], None)
    line = str(caught.value)
    assert line.startswith("torch.export: torch.export cannot capture the model (from module "
                           "net: Gate, at test_check.py:")
    assert "data-dependent" in line and caught.value.module == "net"


def test_a_file_written_but_refused_by_its_interpreter_fails():
    model = Classifier(SortPool(), {"mean": [0.5], "std": [0.25]})
    with pytest.raises(NotExportable) as caught:
        check(model, SHAPE, ["tflite_fp32"], None)
    assert str(caught.value).startswith("tflite_fp32: LiteRT cannot run STABLEHLO_SORT (from "
                                        "module net: SortPool")


def test_a_passed_check_is_cached_and_a_rerun_does_nothing(tmp_path, cache, monkeypatch):
    model = cnn()
    first = cached_check(model, model.record, SHAPE, 10, ["onnx_fp32"], None)
    assert first["cached"] is False and "onnx_fp32 load" in first["steps"]
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    assert len([p for p in files if p.suffix == ".json"]) == 1
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(check_module, "check", lambda *a, **k: pytest.fail("checked again"))
    second = cached_check(model, model.record, SHAPE, 10, ["onnx_fp32"], None)
    assert second == {**first, "cached": True}
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == files
    assert not list(scratch.iterdir())


def test_the_cache_key_follows_what_decides_the_outcome(tmp_path):
    path = gfnet_file(tmp_path)
    model = build(ModelConfig(module=f"{path}:gfnet"), META, tmp_path)
    key = cache_key(model.record, SHAPE, 10, ["tflite_int8", "onnx_int8"], "ptq")
    assert key == cache_key(model.record, SHAPE, 10, ["onnx_int8", "tflite_int8"], "ptq")
    others = [cache_key(model.record, SHAPE, 10, ["onnx_int8"], "ptq"),
              cache_key(model.record, SHAPE, 10, ["onnx_int8", "tflite_int8"], "qat"),
              cache_key(model.record, (1, 16, 16), 10, ["onnx_int8", "tflite_int8"], "ptq"),
              cache_key(model.record, SHAPE, 3, ["onnx_int8", "tflite_int8"], "ptq")]
    path.write_text(GFNET.replace("norm=\"ortho\"", "norm=\"forward\""))
    others.append(cache_key(model.record, SHAPE, 10, ["tflite_int8", "onnx_int8"], "ptq"))
    assert len({key, *others}) == 6
    assert cache_key({}, SHAPE, 10, ["onnx_int8"], "ptq") is None


def test_check_model_command_passes_the_cnn():
    result = CliRunner().invoke(cli, ["check-model", "cnn", "--formats", "onnx_fp32",
                                      "--input-shape", "1x8x8", "--classes", "10"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[:3]] == [
        "torch.export", "qat", "onnx_fp32"]
    assert result.stdout.splitlines()[-1].startswith("ok: cnn exports to onnx_fp32")


def test_check_model_command_exits_2_naming_the_op(tmp_path):
    result = CliRunner().invoke(cli, [
        "check-model", f"{gfnet_file(tmp_path)}:gfnet", "--formats", "tflite_fp32",
        "--quantize", "none", "--input-shape", "1x8x8", "--kwarg", "size=8"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "tflite_fp32" in result.stderr and "aten._fft_r2c.default" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["resnet181"], "check-model: arch: unknown architecture 'resnet181' (did you mean "
                    "resnet18?)"),
    (["missing.py:build"], "check-model: module: file "),
    (["cnn", "--formats", "onnx_int9"], "(did you mean onnx_int8?)"),
    (["cnn", "--formats", "tflite_int8", "--quantize", "none"], "needs --quantize qat or ptq"),
])
def test_check_model_command_bad_usage_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(cli, ["check-model", *args, "--input-shape", "1x8x8"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_pipeline_with_a_non_exportable_student_stops_before_training(tmp_path):
    """The distill stage runs the check first: exit 2 naming the format and the op, within a
    few seconds, no epoch trained (the teacher stage before it is kept for the rerun)."""
    import subprocess
    import sys

    (tmp_path / "gfnet.py").write_text(GFNET)
    (tmp_path / "p.yaml").write_text(
        "name: gf\nteacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 1}}\n"
        "student: {module: 'gfnet.py:gfnet'}\nstages:\n"
        "  - {kind: distill, epochs: 1}\n  - {kind: quantize, epochs: 1}\n"
        "  - {kind: export, formats: [onnx_int8, tflite_int8]}\n")
    proc = subprocess.run([sys.executable, "-m", "edgekd", "run", "p.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("p.yaml: student: cannot be exported: tflite_int8: litert-torch "
                           "cannot lower aten._fft_r2c"), line
    assert "net.filter" in line and "check_export: false" in line
    assert not list((tmp_path / "runs" / "gf" / "distill").glob("*.ckpt"))
    assert (tmp_path / "runs" / "gf" / "teacher" / "teacher.pt").is_file()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_torchvision_student_on_grey_or_rgb_data_runs_in_every_int8_and_fp32_file(channels):
    """Grey data into a 3-channel torchvision network once gave an int8 .tflite that LiteRT
    refused to load (BROADCAST_TO from the channel repeat): each file is written and run."""
    meta = {"num_classes": 10, "in_channels": channels, "input_shape": [channels, 32, 32],
            "mean": [0.4] * channels, "std": [0.2] * channels}
    torch.manual_seed(0)
    model = build(ModelConfig(arch="torchvision:squeezenet1_1"), meta, Path.cwd())
    formats = ["onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"]
    result = check(model, (channels, 32, 32), formats, "ptq")
    assert [f"{name} load" for name in formats] == [s for s in result["steps"] if "load" in s]
