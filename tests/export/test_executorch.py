"""ExecuTorch (.pte, XNNPACK delegate) as a third runtime: export, evaluation by ExecuTorch's own
runtime, parity with the int8 model and the other int8 runtimes, delegate coverage and its
budget, local profiling in a fresh process, and the one-line error without the extra.

One tiny student, trained for a few seconds on the built-in digits and quantized by PT2E
(the graph QAT also ends in), is written once to every int8 format for the whole module."""

from __future__ import annotations

import csv
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.budgets import ExportBudget, check
from edgekd.config import DataConfig
from edgekd.data import load
from edgekd.export import executorch
from edgekd.export.formats import FORMATS, RUNTIMES, missing_runtime
from edgekd.export.writers import ExportSource
from edgekd.metrics import top1_agreement
from edgekd.stages.export import _compare, _int8_runtimes_agree
from edgekd.stages.profile import slower_int8_warnings, speedups

pytest.importorskip("executorch.runtime", reason="the executorch extra is not installed")


def _student(splits) -> torch.nn.Module:
    from edgekd.models.builders import Classifier, cnn

    torch.manual_seed(0)
    model = Classifier(cnn(10, 1, width=8, depth=2), {"mean": [0.5], "std": [0.25]})
    x, y = torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(4):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each format's file, its test logits by its runtime, and its reference's logits."""
    from edgekd.quant import int8, ptq

    splits = load(DataConfig(), seed=0)
    fp32 = _student(splits)
    # The dry int8 model edgekd's exportability check makes (PTQ route); labelled "qat" so the
    # int8 ONNX file, like the others, comes from this graph.
    quantized = int8.from_prepared(ptq.pt2e_ptq(fp32, splits.x_train[:64]), "qat")
    source = ExportSource(fp32, quantized, splits.input_shape, lambda n: splits.x_train[:n])
    out = tmp_path_factory.mktemp("pte")
    x = splits.x_test
    files, logits, references = {}, {}, {}
    for name in ("pte_fp32", "pte_int8", "onnx_int8", "tflite_int8"):
        fmt = FORMATS[name]
        written = fmt.write(source, out / fmt.filename, 18)
        files[name] = written
        logits[name] = RUNTIMES[fmt.runtime].evaluate(written.path, x)
        with torch.no_grad():
            references[name] = written.reference(torch.from_numpy(x)).numpy()
    return {"splits": splits, "files": files, "logits": logits, "references": references}


def test_fp32_pte_matches_the_student(built):
    got, reference = built["logits"]["pte_fp32"], built["references"]["pte_fp32"]
    assert built["files"]["pte_fp32"].reference_kind == "fp32"
    assert np.abs(got - reference).max() < 1e-4
    assert top1_agreement(got, reference) == 1.0
    assert RUNTIMES["executorch"].output_scale(built["files"]["pte_fp32"].path) is None


def test_int8_pte_is_within_one_output_step_of_the_int8_model(built):
    written = built["files"]["pte_int8"]
    scale = RUNTIMES["executorch"].output_scale(written.path)
    assert written.reference_kind == "int8" and scale > 0
    # The output scale read from the .pte is the one the ONNX file's last dequantize has.
    onnx_scale = RUNTIMES["onnxruntime"].output_scale(built["files"]["onnx_int8"].path)
    assert scale == pytest.approx(onnx_scale, rel=1e-5)
    m = _compare("student_int8_pte", written.path, built["logits"]["pte_int8"],
                 built["references"]["pte_int8"], built["splits"].y_test, scale)
    assert m["student_int8_pte.top1_agreement"] >= 0.99
    assert m["student_int8_pte.within_one_step"] >= 0.999
    assert m["student_int8_pte.max_abs_diff_steps"] <= 2.0 + 1e-3
    assert m["student_int8_pte.accuracy"] >= m["student_int8_pte.source_accuracy"] - 0.01
    assert m["student_int8_pte.accuracy"] > 0.8  # a trained student, not chance


def test_int8_pte_agrees_with_the_onnx_and_tflite_int8_files(built):
    files, logits = built["files"], built["logits"]
    metrics = {f"{FORMATS[n].artifact}.output_scale": RUNTIMES[FORMATS[n].runtime].output_scale(
        files[n].path) for n in ("onnx_int8", "tflite_int8", "pte_int8")}
    agree = _int8_runtimes_agree(files, logits, metrics)
    assert set(agree) == {"student_int8_tflite.max_diff_steps_vs_onnx",
                          "student_int8_pte.max_diff_steps_vs_onnx",
                          "student_int8_pte.max_diff_steps_vs_tflite"}
    # Three integer engines, one int8 model: the same outputs up to one step.
    assert all(value <= 1.0 + 1e-3 for value in agree.values()), agree


@pytest.mark.parametrize("name", ["pte_fp32", "pte_int8"])
def test_the_default_student_runs_wholly_in_one_xnnpack_partition(built, name):
    counts = RUNTIMES["executorch"].op_counts(built["files"][name].path)
    assert counts["delegate_partitions"] == 1 and counts["ops_outside_delegate"] == 0
    assert counts["delegated_ops"] == 1.0 and counts["ops_in_delegate"] >= 6
    if name == "pte_int8":
        assert counts["ops_float"] == 0 and counts["ops_int8"] >= 4
        assert counts["quantize_nodes"] == 1 and counts["dequantize_nodes"] == 1
    else:
        assert counts["ops_int8"] == 0 and counts["ops_float"] >= 4


class _Flipped(torch.nn.Module):
    """conv -> flip -> conv: XNNPACK has no flip, so it is left to the portable kernels and
    splits the delegate in two."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.b(torch.flip(torch.relu(self.a(x)), dims=[3])).mean((2, 3))


def test_an_op_xnnpack_lacks_is_counted_outside_and_fails_min_delegated_ops(tmp_path):
    torch.manual_seed(0)
    model = _Flipped().eval()
    path = executorch.write_pte(model, (1, 8, 8), tmp_path / "flipped.pte")
    counts = executorch.pte_op_counts(path)
    portable = executorch.delegation(path).portable
    assert counts["delegate_partitions"] == 2 and portable["aten::flip"] == 1
    assert counts["ops_outside_delegate"] == sum(portable.values())
    assert 0 < counts["delegated_ops"] < 1
    metrics = {f"student_fp32_pte.{k}": float(v) for k, v in counts.items()}
    [result] = check(ExportBudget(min_delegated_ops=1.0), metrics, ["student_fp32_pte"])
    assert result.name == "student_fp32_pte.min_delegated_ops" and not result.passed
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    # Still the same model: the portable kernel computes between the two partitions.
    assert np.abs(executorch.pte_logits(path, x) - expected).max() < 1e-5


def test_the_export_stage_names_the_ops_outside_the_delegate(tmp_path):
    from edgekd.artifacts import StageResult
    from edgekd.export.formats import RUNTIMES
    from edgekd.stages.export import _outside_delegate

    path = executorch.write_pte(_Flipped().eval(), (1, 8, 8), tmp_path / "flipped.pte")
    result = StageResult()
    result.metrics["student_fp32_pte.delegated_ops"] = \
        executorch.pte_op_counts(path)["delegated_ops"]
    [warning] = _outside_delegate("student_fp32_pte", path, RUNTIMES["executorch"], result)
    assert "outside the XNNPACK delegate" in warning and "aten::flip x1" in warning
    assert result.info["ops_outside_delegate"]["student_fp32_pte"]["aten::flip"] == 1


class _Sorted(torch.nn.Module):
    """An op the pip build of ExecuTorch lowers but has no kernel for (aten::sort.values)."""

    def forward(self, x):
        return torch.sort(x.flatten(1), dim=1).values[:, :10]


def test_an_op_without_a_kernel_is_named_not_numbered(tmp_path):
    path = executorch.write_pte(_Sorted(), (1, 4, 4), tmp_path / "sorted.pte")
    assert executorch.missing_operators(path) == ["aten::sort.values"]
    with pytest.raises(RuntimeError, match=r"no kernel for aten::sort\.values"):
        executorch.pte_logits(path, np.zeros((1, 1, 4, 4), np.float32))


def test_profile_names_the_missing_op_and_refuses_files_that_are_not_models(tmp_path):
    from click.testing import CliRunner

    from edgekd.cli import cli

    path = executorch.write_pte(_Sorted(), (1, 4, 4), tmp_path / "sorted.pte")
    run = CliRunner().invoke(cli, ["profile", str(path), "--device", "local", "--runs", "2"])
    assert run.exit_code == 5 and "no kernel for aten::sort.values" in run.output
    (tmp_path / "empty.pte").write_bytes(b"")
    (tmp_path / "noise.pte").write_bytes(np.random.default_rng(0).bytes(4096))
    for name, why in (("empty.pte", "the file is empty"),
                      ("noise.pte", "not an ExecuTorch program")):
        run = CliRunner().invoke(cli, ["profile", str(tmp_path / name), "--device", "local"])
        assert run.exit_code == 2 and why in run.output, run.output


def test_min_delegated_ops_applies_to_files_with_a_delegate_only():
    budget = ExportBudget(min_delegated_ops=1.0)
    metrics = {"student_int8_pte.delegated_ops": 1.0, "student_int8_tflite.delegated_ops": 0.9}
    checks = {c.name: c.passed for c in check(budget, metrics, [
        "student_int8_pte", "student_int8_tflite", "student_int8_onnx", "student_fp32_pte"])}
    # onnxruntime has no delegate: not checked; a .pte without the metric fails, never skipped.
    assert checks == {"student_int8_pte.min_delegated_ops": True,
                      "student_int8_tflite.min_delegated_ops": False,
                      "student_fp32_pte.min_delegated_ops": False}


def test_int8_speedup_and_slower_warning_cover_pte_pairs():
    metrics = {"student_fp32_pte.latency_ms_p50": 0.05, "student_int8_pte.latency_ms_p50": 0.1}
    found = speedups(metrics)
    assert found == {"student_int8_pte.int8_speedup": pytest.approx(0.5)}
    [warning] = slower_int8_warnings(found)
    assert warning.startswith("student_int8_pte: int8 is SLOWER than fp32")


def test_local_profile_measures_a_pte_in_a_fresh_process(built, tmp_path):
    from edgekd.devices.measure import profile
    from edgekd.devices.profiles import load_profile

    splits = built["splits"]
    data = tmp_path / "test.npz"
    np.savez(data, x=splits.x_test[:50], y=splits.y_test[:50])
    ops = tmp_path / "ops.csv"
    result = profile(built["files"]["pte_int8"].path, load_profile("local"), runs=30, warmup=3,
                     data=data, op_profile=ops)
    m = result.metrics
    assert result.runtime == "executorch" and result.measured
    assert result.conditions["runtime_version"] == metadata.version("executorch")
    assert 0 < m["latency_ms_min"] <= m["latency_ms_p50"] <= m["latency_ms_p90"] \
        <= m["latency_ms_p99"] <= m["latency_ms_max"]
    assert m["load_ms"] > 0 and m["first_inference_ms"] > 0
    assert m["peak_memory_mb"] >= m["baseline_memory_mb"] > 0
    expected = float((built["logits"]["pte_int8"][:50].argmax(1) == splits.y_test[:50]).mean())
    assert m["accuracy"] == pytest.approx(expected)
    # The pip build of ExecuTorch has event tracing: per-op rows from XNNPACK's own profiler.
    assert f"ops from ETDump ({ops})" in result.conditions["op_profile"]
    rows = list(csv.DictReader(ops.open()))
    assert rows and all(r["runs_on"] == "XNNPACK" for r in rows)
    assert any(r["op"].startswith("Convolution") for r in rows)


def test_arm64_validation_says_it_does_not_cover_pte_files(built):
    from edgekd.arch.validate import UsageError, validate
    from edgekd.artifacts import Artifact, StageResult
    from edgekd.config import ExportStage
    from edgekd.stages.export import _validate_arch

    path = built["files"]["pte_int8"].path
    with pytest.raises(UsageError, match=r"does not cover \.pte files: .* CUDA build"):
        validate(path)
    # In the export stage: a warning saying so, no metric, so no arm64 check to pass or fail.
    result = StageResult(artifacts={"student_int8_pte": Artifact.of("student_int8_pte", path,
                                                                    "pte_int8")},
                         evaluated=["student_int8_pte"])
    cfg = ExportStage(kind="export", formats=["pte_int8"], validate_arch="arm64")
    [warning] = _validate_arch(cfg, None, result)
    assert warning.startswith("student_int8_pte: not validated on arm64: arm64 validation "
                              "does not cover .pte files")
    assert not any("arm64" in key for key in result.metrics)


def test_without_executorch_a_pte_format_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    from edgekd.config import load_pipeline
    from edgekd.schema import ConfigError

    real = metadata.distribution

    def distribution(name):
        if name == "executorch":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    assert missing_runtime("onnx_int8") is None
    assert missing_runtime("pte_int8") == ("pte_int8 needs executorch, which is not installed: "
                                           "pip install 'edgekd[executorch]'")
    source = Path(__file__).parents[2] / "pipelines" / "mobile.yaml"
    text = source.read_text()
    pipeline = tmp_path / "mobile.yaml"
    pipeline.write_text(text.replace("formats: [onnx_fp32,", "formats: [pte_int8, onnx_fp32,")
                        if "pte_int8" not in text else text)
    with pytest.raises(ConfigError) as raised:
        load_pipeline(pipeline)
    assert any("pip install 'edgekd[executorch]'" in line and "formats" in line
               for line in raised.value.lines), raised.value.lines
