import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.config import STAGE_KINDS, ConfigError, Pipeline, load_pipeline
from edgekd.devices.profiles import devices_dir, load_profile
from edgekd.schema import read_yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
DEVICES = sorted(devices_dir().glob("*.yaml"))

MINIMAL = """\
name: t
teacher: {arch: cnn, width: 8, depth: 2, train: {epochs: 1}}
student: {arch: cnn, width: 4, depth: 1}
stages:
  - kind: distill
    epochs: 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def errors(path: Path) -> list[str]:
    from edgekd.pipeline import load  # the schema and the target device, as `run` checks

    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.lines


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_is_valid(path):
    assert isinstance(load_pipeline(path), Pipeline)


@pytest.mark.parametrize("path", DEVICES, ids=lambda p: p.name)
def test_every_shipped_device_profile_is_valid(path):
    assert load_profile(str(path)).name == path.stem


QUANTIZE_TYPO = "  - kind: quantize\n    budget: {max_acuracy_drop: 0.01}\n"


def test_misspelled_budget_key_names_file_field_and_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + QUANTIZE_TYPO)
    assert errors(path) == [
        f"{path}: stages[1].budget.max_acuracy_drop: unknown key (did you mean max_accuracy_drop?)"
    ]


def test_all_errors_reported_at_once(tmp_path):
    text = MINIMAL.replace("width: 4", "widht: 4") + "    temprature: 3\n  - kind: quantise\n"
    lines = errors(write(tmp_path, text))
    assert len(lines) == 3
    assert any("student.widht: unknown key (did you mean width?)" in line for line in lines)
    assert any("stages[0].temprature: unknown key (did you mean temperature?)" in line
               for line in lines)
    assert any("stages[1].kind: unknown stage kind 'quantise' (did you mean quantize?)" in line
               for line in lines)


def test_unknown_target_device_suggests_a_known_one(tmp_path):
    lines = errors(write(tmp_path, MINIMAL + "target: lokal\n"))
    assert len(lines) == 1 and "target: unknown device 'lokal' (did you mean local?)" in lines[0]


def test_unknown_architecture_and_bad_units(tmp_path):
    text = MINIMAL.replace("arch: cnn, width: 4, depth: 1", "arch: resnet81") + \
        "  - kind: export\n    formats: [onnx_fp32]\n    budget: {max_size: 2 parsecs}\n"
    lines = errors(write(tmp_path, text))
    assert any("student.arch: unknown architecture 'resnet81' (did you mean resnet18?)" in line
               for line in lines)
    assert any("stages[1].budget.max_size" in line and "parsecs" in line for line in lines)


def test_stage_order_and_dependencies_are_checked(tmp_path):
    text = MINIMAL.replace("  - kind: distill\n    epochs: 1\n", "  - kind: export\n")
    (line,) = errors(write(tmp_path, text))
    assert "export stage needs a distill stage" in line


def test_teacher_needs_weights_or_training(tmp_path):
    text = MINIMAL.replace(", train: {epochs: 1}", "")
    (line,) = errors(write(tmp_path, text))
    assert line.endswith("teacher: give the teacher trained weights (checkpoint: or weights:), "
                         "or a train: block to train it here")


def test_yaml_syntax_error_names_line(tmp_path):
    (line,) = errors(write(tmp_path, "name: t\nstages: [\n"))
    assert line.startswith(f"{tmp_path / 'p.yaml'}: line") and "YAML syntax error" in line


def test_validate_command_does_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from edgekd.cli import cli; "
            f"r = CliRunner().invoke(cli, ['validate', {str(PIPELINES[0])!r}]); "
            "assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_validate_command_exit_2_with_one_line_per_problem(tmp_path):
    from click.testing import CliRunner

    from edgekd.cli import cli

    path = write(tmp_path, MINIMAL + QUANTIZE_TYPO)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"{path}: stages[1].budget.max_acuracy_drop: unknown key (did you mean max_accuracy_drop?)"
    ]


def test_stage_table_matches_config_union():
    from edgekd.config import Stage
    from edgekd.stages import STAGES

    union = Stage.__origin__.__args__
    kinds = {cls.model_fields["kind"].annotation.__args__[0] for cls in union}
    assert set(STAGES) == kinds | {"teacher"} and kinds == set(STAGE_KINDS)
    for spec in STAGES.values():  # a stage only needs stages that run before it
        order = list(STAGES)
        assert all(order.index(need) < order.index(spec.kind) for need in spec.needs)


def test_architecture_names_exist_in_torchvision():
    import torchvision

    from edgekd.config import TORCHVISION_ARCHS

    for name in TORCHVISION_ARCHS:
        assert callable(getattr(torchvision.models, name)), name


def test_int8_export_needs_quantize(tmp_path):
    text = MINIMAL + "  - kind: export\n    formats: [onnx_fp32, tflite_int8]\n"
    (line,) = errors(write(tmp_path, text))
    assert "export formats tflite_int8 need a quantize stage" in line


@pytest.mark.parametrize("text, key, line, first", [
    (MINIMAL + "stages:\n  - kind: export\n", "stages", 7, 4),  # would drop the distill stage
    (MINIMAL + "    epochs: 3\n", "epochs", 7, 6),
    (MINIMAL.replace("{arch: cnn, width: 4", "{arch: cnn, arch: resnet18, width: 4"), "arch", 3,
     3),
], ids=["stages", "nested", "flow"])
def test_duplicate_key_names_file_line_and_key(tmp_path, text, key, line, first):
    path = write(tmp_path, text)
    assert errors(path) == [f"{path}: line {line}: key {key!r} given twice (first on line "
                            f"{first})"]


def test_duplicate_key_in_a_device_profile(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("transport: ssh\nhost: pi\nthreads: 2\nhost: other\n")
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert err.value.lines == [f"{path}: line 4: key 'host' given twice (first on line 2)"]


def test_merge_keys_may_still_be_overridden(tmp_path):
    text = MINIMAL.replace("teacher: {", "base: &b {epochs: 1, lr: 0.5}\nteacher: {") \
        .replace("    epochs: 1\n", "    <<: *b\n    lr: 0.1\n")
    raw = read_yaml(write(tmp_path, text))
    assert raw["stages"][0] == {"kind": "distill", "epochs": 1, "lr": 0.1}


@pytest.mark.parametrize("old, new, field", [
    ("train: {epochs: 1}", "train: {epochs: 1, lr: .inf}", "teacher.train.lr"),
    ("    epochs: 1\n", "    epochs: 1\n    temperature: .inf\n", "stages[0].temperature"),
    ("    epochs: 1\n", "    epochs: 1\n    alpha: .nan\n", "stages[0].alpha"),
    ("    epochs: 1\n", "    epochs: 1\n    budget: {min_accuracy: -.inf}\n",
     "stages[0].budget.min_accuracy"),
], ids=["lr", "temperature", "alpha", "budget"])
def test_non_finite_numbers_are_refused(tmp_path, old, new, field):
    path = write(tmp_path, MINIMAL.replace(old, new))
    assert errors(path) == [f"{path}: {field}: Input should be a finite number"]


def _hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.yaml"
    if kind == "nested":
        path.write_text("[" * 100_000)
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # read whole, it would wait for a writer forever
    elif kind == "large":
        path.write_text("# comment\n" * 110_000)
    else:
        path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind, message", [("nested", "YAML nested too deeply to read"),
                                           ("folder", "is a folder, not a YAML file"),
                                           ("latin1", "not UTF-8 text (byte 9)"),
                                           ("fifo", "is not a regular file (a FIFO, a device "
                                                    "or a socket), not a YAML file"),
                                           ("large", "larger than a YAML file can be (over 1 "
                                                     "MiB): is it the right file?")])
def test_unreadable_pipeline_is_one_line_exit_2(tmp_path, command, kind, message):
    from click.testing import CliRunner

    from edgekd.cli import cli

    path = _hostile(tmp_path, kind)
    extra = ["--out", str(tmp_path / "run")] if command == "run" else []
    result = CliRunner().invoke(cli, [command, str(path), *extra])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"{path}: {message}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["name: t\x00\n", "name: [t\n", "a: b: c\n"])
def test_a_yaml_syntax_error_is_one_line_with_one_colon(tmp_path, text):
    (line,) = errors(write(tmp_path, text))
    assert line.startswith(f"{tmp_path / 'p.yaml'}: line ") and "::" not in line
    assert "\n" not in line and "YAML syntax error" in line


@pytest.mark.parametrize("old, new, field", [
    ("train: {epochs: 1}", "train: {epochs: true}", "teacher.train.epochs"),
    ("    epochs: 1\n", "    epochs: false\n", "stages[0].epochs"),
    ("    epochs: 1\n", "    epochs: 1\n    batch_size: true\n", "stages[0].batch_size"),
    ("    epochs: 1\n", "    epochs: 1\n    temperature: true\n", "stages[0].temperature"),
    ("name: t\n", "name: t\nseed: true\n", "seed"),
    ("name: t\n", "name: t\ndata: {image_size: [true, 8]}\n", "data.image_size"),
    ("name: t\n", "name: t\ndata: {stats_samples: true}\n", "data.stats_samples"),
    ("width: 4,", "width: true,", "student.width"),
], ids=["train-epochs", "distill-epochs", "batch", "float", "seed", "image-size-item",
        "samples", "width"])
def test_booleans_are_no_numbers(tmp_path, old, new, field):
    path = write(tmp_path, MINIMAL.replace(old, new))
    (line,) = errors(path)
    assert line.startswith(f"{path}: {field}: expected a number, not "), line


def test_yes_no_fields_still_take_booleans(tmp_path):
    text = MINIMAL.replace("name: t\n", "name: t\ncompile: true\n") \
        .replace("    epochs: 1\n", "    epochs: 1\n    baseline: false\n")
    pipeline = load_pipeline(write(tmp_path, text))
    assert pipeline.compile is True and pipeline.stages[0].baseline is False


@pytest.mark.parametrize("old, new, field, limit", [
    ("name: t\n", "name: t\ndata: {image_size: [100000, 8]}\n", "data.image_size[0]", "4096"),
    ("    epochs: 1\n", "    epochs: 100000000000000000000000000000\n", "stages[0].epochs",
     "100000"),
    ("train: {epochs: 1}", "train: {epochs: 100001}", "teacher.train.epochs", "100000"),
    ("    epochs: 1\n", "    epochs: 1\n    batch_size: 10000000\n", "stages[0].batch_size",
     "65536"),
    ("width: 4,", "width: 4, input: {size: [8, 5000]},", "student.input.size[1]", "4096"),
], ids=["image-size", "epochs-1e29", "teacher-epochs", "batch", "input-size"])
def test_numbers_no_machine_takes_are_refused(tmp_path, old, new, field, limit):
    path = write(tmp_path, MINIMAL.replace(old, new))
    (line,) = errors(path)
    assert line.startswith(f"{path}: {field}: ") and limit in line, line


def test_a_name_longer_than_a_file_name_is_refused(tmp_path):
    path = write(tmp_path, MINIMAL.replace("name: t", "name: " + "n" * 256))
    assert errors(path) == [f"{path}: name: too long (256 bytes): it names the run directory "
                            "runs/<name>, and a file name is at most 255 bytes"]
    assert load_pipeline(write(tmp_path, MINIMAL.replace("name: t", "name: " + "n" * 255)))


def test_qat_batch_size_is_bounded_by_the_captured_graphs_batch_range(tmp_path):
    """A QAT batch above the capture's range failed in training (torch.export's guards);
    the config refuses it, and its bound is the quant code's."""
    from edgekd.config.stages import QAT_MAX_BATCH
    from edgekd.quant.qat import MAX_BATCH

    assert QAT_MAX_BATCH == MAX_BATCH
    path = tmp_path / "p.yaml"
    path.write_text("name: q\nteacher: {arch: cnn}\nstudent: {arch: cnn, width: 2}\nstages:\n"
                    "  - {kind: distill}\n  - {kind: quantize, batch_size: 2048}\n")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.batch_size"):
        load_pipeline(path)


def test_numbers_given_as_strings_are_refused_sizes_as_text_still_taken(tmp_path):
    path = write(tmp_path, MINIMAL.replace("epochs: 1\n", 'epochs: "1"\n')
                 + "  - kind: export\n    formats: [onnx_fp32]\n    budget: {max_size: 2 MB}\n")
    assert errors(path) == [f"{path}: stages[0].epochs: expected a number, not the string '1'"]
    path = write(tmp_path, MINIMAL + "  - kind: export\n    formats: [onnx_fp32]\n"
                 "    budget: {max_size: 2 MB}\n")
    assert load_pipeline(path).stages[1].budget.max_size == "2 MB"


def test_an_export_format_given_twice_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "  - kind: export\n    formats: [onnx_fp32, onnx_fp32]\n")
    assert errors(path) == [f"{path}: stages[1].formats: onnx_fp32 given twice; give each "
                            "format once"]


def test_exponents_without_a_dot_are_numbers_as_in_yaml_1_2(tmp_path):
    """PyYAML reads `lr: 1e-3` as a string, which is refused as a number given as text."""
    path = write(tmp_path, MINIMAL.replace("epochs: 1\n", "epochs: 1\n    lr: 1e-3\n"))
    assert load_pipeline(path).stages[0].lr == 0.001


LONG_PATH = "d/" * 3000 + "x"
"""6,001 bytes: longer than any path the system takes (PATH_MAX is 4,096 with its NUL)."""


@pytest.mark.parametrize("old, new, field, size", [
    ("name: t\n", f"name: t\ndata: {{source: npz, path: {LONG_PATH}.npz}}\n", "data.path",
     "6,005 bytes"),
    ("width: 4,", f"width: 4, weights: {'w' * 300}.pt,", "student.weights", "303 bytes"),
    ("name: t\n", f"name: t\ntarget: {LONG_PATH}.yaml\n", "target", "6,006 bytes"),
    ("name: t\n", f"name: t\ntarget: {'n' * 256}\n", "target", "256 bytes"),
    ("arch: cnn, width: 4, depth: 1", f"module: {LONG_PATH}.py:build", "student.module",
     "6,004 bytes"),
    ("arch: cnn, width: 4, depth: 1", f"arch: hf:{LONG_PATH}", "student.arch", "6,001 bytes"),
], ids=["data-path", "weights-name", "target-path", "target-name", "module", "hf-directory"])
def test_a_path_longer_than_the_system_takes_is_refused_by_its_length(tmp_path, old, new,
                                                                      field, size):
    """A path of megabytes was an OSError quoting it whole (exit 1, a line as long as the
    path); it is refused naming the field and its length, the path not echoed."""
    path = write(tmp_path, MINIMAL.replace(old, new))
    assert new != old and new in path.read_text()
    (line,) = errors(path)
    assert line.startswith(f"{path}: {field}: ") and size in line, line
    assert len(line) < len(str(path)) + 200 and "d/d/d/d/d" not in line


def test_a_long_path_a_system_takes_is_still_a_path(tmp_path):
    from edgekd.schema import NAME_MAX_BYTES, PATH_MAX_BYTES, path_problem

    longest = "/".join(["n" * NAME_MAX_BYTES] * 16)[:PATH_MAX_BYTES - 1]
    assert path_problem(longest) is None and path_problem(longest + "n") is not None
    assert path_problem("é" * 127) is None and "256 bytes" in path_problem("é" * 128)
    with pytest.raises(ConfigError) as info:  # --set, like a device file
        load_profile("local", {"identity_file": LONG_PATH})
    assert info.value.lines == ["--set identity_file: a path of 6,001 bytes; a path is at most "
                                "4,095 bytes (PATH_MAX)"]
