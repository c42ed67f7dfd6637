"""Config mistakes that used to pass silently: each is now exit 2 with one line naming the file
and the field, from `edgekd validate` and from `edgekd run` alike (nothing runs)."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd.cli import cli

HEAD = """\
name: t
teacher: {arch: cnn, width: 8, depth: 2, train: {epochs: 1}}
student: {arch: cnn, width: 4, depth: 1}
"""
DISTILL = "  - kind: distill\n    epochs: 1\n"
QUANTIZE = "  - kind: quantize\n    epochs: 1\n"
EXPORT = "  - kind: export\n    formats: [onnx_fp32, onnx_int8]\n"

CASES = {
    # limits a stage without deployable files cannot check
    "latency_on_distill": (DISTILL + "    budget: {max_latency_ms: 50}\n", "",
                           "stages[0].budget.max_latency_ms",
                           "a distill budget cannot check max_latency_ms"),
    "size_on_quantize": (DISTILL, QUANTIZE + "    budget: {max_size: 2 MB}\n",
                         "stages[1].budget.max_size", "a quantize budget cannot check max_size"),
    "agreement_on_distill": (DISTILL + "    budget: {min_top1_agreement: 0.99}\n", "",
                             "stages[0].budget.min_top1_agreement", "export"),
    "memory_on_quantize": (DISTILL, QUANTIZE + "    budget: {max_peak_memory: 1 GB}\n",
                           "stages[1].budget.max_peak_memory", "profile"),
    # an artifact name that matches nothing the pipeline exports
    "artifact_typo": (DISTILL, QUANTIZE + EXPORT + "    budget: {max_size: 2 MB, artifacts: "
                      "[student_int8_onnxx]}\n", "stages[2].budget.artifacts",
                      "'student_int8_onnxx' (did you mean student_int8_onnx?) is not an "
                      "artifact this pipeline exports"),
    # every wrong name at once, not only the first
    "artifact_typos": (DISTILL, QUANTIZE + EXPORT + "    budget: {max_size: 2 MB, artifacts: "
                       "[student_int8_onnxx, student_fp32_onx]}\n", "stages[2].budget.artifacts",
                       "'student_int8_onnxx' (did you mean student_int8_onnx?), "
                       "'student_fp32_onx' (did you mean student_fp32_onnx?) are not artifacts"),
    # a delegate-coverage limit on files that have no delegate checks nothing
    "delegated_ops_on_onnx": (DISTILL, QUANTIZE + EXPORT + "    budget: {min_delegated_ops: 1.0, "
                              "artifacts: [student_int8_onnx]}\n",
                              "stages[2].budget.min_delegated_ops",
                              "none of student_int8_onnx is one, so it would check nothing"),
    # an int8 speed-up limit on fp32 files only checks nothing
    "speedup_on_fp32": (DISTILL, QUANTIZE + EXPORT + "  - kind: profile\n    budget: "
                        "{min_int8_speedup: 1.0, artifacts: [student_fp32_onnx]}\n",
                        "stages[3].budget.min_int8_speedup", "it gates int8 files"),
    # a field that was accepted and never read, now gone
    "freeze_bn_after": (DISTILL, QUANTIZE + "    freeze_bn_after: 2\n",
                        "stages[1].freeze_bn_after", "unknown key"),
    # data fields the built-in digits ignored
    "channels_with_digits": ("data: {source: digits, channels: 3}\n" + "stages:\n" + DISTILL,
                             None, "data.channels", "only image files are converted"),
    # fields with no effect for the chosen method
    "calibration_with_qat": (DISTILL, QUANTIZE + "    calibration: {samples: 8}\n",
                             "stages[1].calibration", "only method: ptq calibrates"),
    "epochs_with_ptq": (DISTILL, "  - kind: quantize\n    method: ptq\n    epochs: 3\n",
                        "stages[1].epochs", "only method: qat trains"),
    "teacher_weight_alone": (DISTILL + "    teacher_weight: 2\n", "",
                             "stages[0].teacher_weight", "no effect without `teachers:`"),
    "validate_cpu_alone": (DISTILL, QUANTIZE + EXPORT + "    validate_cpu: cortex-a76\n",
                           "stages[2].validate_cpu", "only with validate_arch"),
}


def pipeline_text(first: str, rest: str | None) -> str:
    if rest is None:  # `first` carries its own `stages:` header
        return HEAD + first
    return HEAD + "stages:\n" + first + rest


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_mistake_is_exit_2_with_one_line(name, command, tmp_path):
    first, rest, field, message = CASES[name]
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text(first, rest))
    args = [command, str(path)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{path}: {field}: "), line
    assert message in line, line
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written


def test_every_case_is_valid_once_the_mistake_is_removed(tmp_path):
    """The cases differ from a valid pipeline only by their mistake."""
    from edgekd.pipeline import load

    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text(DISTILL, QUANTIZE + EXPORT + "    budget: {max_size: 2 MB, "
                                  "artifacts: [student_int8_onnx]}\n"))
    assert load(path).stage("export").budget.artifacts == ["student_int8_onnx"]
    path.write_text(HEAD + "data: {source: digits}\nstages:\n" + DISTILL)
    assert load(Path(path)).data.image_size is None


def test_relative_data_path_is_taken_from_the_pipeline_folder(tmp_path, monkeypatch):
    """`data.path` is read from the pipeline file's folder, as checkpoints are, whatever the
    current directory; a missing one is a load-time error, not a failure inside a stage."""
    import numpy as np

    from edgekd.pipeline import load

    folder = tmp_path / "project"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.random((40, 1, 8, 8), dtype=np.float32),
             y=np.arange(40) % 4)
    path = folder / "p.yaml"
    path.write_text(HEAD.replace("name: t\n", "name: t\ndata: {source: npz, path: data.npz}\n")
                    + "stages:\n" + DISTILL)
    monkeypatch.chdir(tmp_path)  # not the pipeline's folder
    assert load(path).data.path == folder / "data.npz"
    (folder / "data.npz").unlink()
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{path}: data.path: {folder / 'data.npz'} not found")


def test_target_is_reported_with_the_schema_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "target: rpi44\nsed: 1\nstages:\n" + DISTILL)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"{path}: sed: unknown key (did you mean seed?)",
        f"{path}: target: unknown device 'rpi44' (did you mean rpi4?); known: "
        "android, jetson-orin-nano, local, pixel7, rpi4, rpi5"]


@pytest.mark.parametrize("text, expected", [
    ("data: {source: digit}\n", "data.source: 'digit' is not one of digits, folder, npz, "
                                "manifest (did you mean digits?)"),
    ("  - kind: profile\n    budget: {max_latency_ms: {p50: 50, p95: 100}}\n",
     "stages[3].budget.max_latency_ms: unknown percentile 'p95' (did you mean p99?); use mean, "
     "p50, p90, p99"),
    ("  - kind: profile\n    budget: {max_latency_ms: fast}\n",
     "stages[3].budget.max_latency_ms: cannot read 'fast': expected a number and a unit, like "
     "'100 ms'"),
    ("  - kind: profile\n    budget: {max_size: 1 MB}\n",
     "stages[3].budget.max_size: not accepted here: a profile budget cannot check max_size; it "
     "belongs in the budget of an export stage"),
])
def test_one_readable_line_per_mistake(text, expected, tmp_path):
    path = tmp_path / "p.yaml"
    stages = "stages:\n" + DISTILL + QUANTIZE + EXPORT
    path.write_text(HEAD + text + stages if text.startswith("data") else HEAD + stages + text)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"{path}: {expected}"]


@pytest.mark.parametrize("text, field, message", [
    ("    optimizer: {momentum: 0.8}\n", "stages[0].optimizer.momentum",
     "only the sgd optimiser takes a momentum"),
    ("    optimizer: {warmup_epochs: 2}\n", "stages[0].optimizer.warmup_epochs",
     "the one-cycle schedule has its own warm-up"),
    ("    optimizer: {schedule: cosine, gamma: 0.5}\n", "stages[0].optimizer.gamma",
     "only schedule: step decays in steps"),
    ("    optimizer: {name: adam}\n", "stages[0].optimizer.name",
     "'adam' is not one of adamw, sgd (did you mean adamw?)"),
])
def test_optimizer_fields_that_would_have_no_effect(text, field, message, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "stages:\n" + DISTILL + text)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{path}: {field}: ") and message in line, line


def test_optimizer_settings_with_ptq_are_rejected(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "stages:\n" + DISTILL + "  - kind: quantize\n    method: ptq\n"
                    "    optimizer: {name: sgd}\n")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert "stages[1].optimizer: only method: qat trains" in result.output


def test_the_quantize_drop_limit_also_gates_the_int8_files(tmp_path):
    """With method: ptq the int8 ONNX file is calibrated apart from the model the quantize
    stage measures: its drop limit applies to every int8 file too, unless export sets one."""
    from edgekd.pipeline import load

    quantize = "  - kind: quantize\n    method: ptq\n    budget: {max_accuracy_drop: 0.01}\n"
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text(DISTILL, quantize + EXPORT))
    assert load(path).budget("export").max_accuracy_drop == 0.01
    assert load(path).stage("export").budget is None  # the file says what it says
    path.write_text(pipeline_text(DISTILL, quantize + EXPORT
                                  + "    budget: {max_accuracy_drop: 0.05}\n"))
    assert load(path).budget("export").max_accuracy_drop == 0.05



@pytest.mark.parametrize("device, says", [
    ("name: x\ntransport: ssh\nhost: [oops\n", "YAML syntax error"),
    ("name: x\ntransport: ssh\nhost: -oProxyCommand=x\n", "host: must not start with '-'"),
])
def test_a_broken_target_file_is_found_before_anything_trains(tmp_path, device, says):
    from click.testing import CliRunner

    from edgekd.cli import cli

    (tmp_path / "dev.yaml").write_text(device)
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text(DISTILL, "").replace("stages:", "target: dev.yaml\nstages:"))
    run = CliRunner().invoke(cli, ["validate", str(path)])
    assert run.exit_code == 2 and f"{path}: target: " in run.output and says in run.output
