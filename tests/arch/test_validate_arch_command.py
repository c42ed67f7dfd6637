"""`edgekd validate-arch` as a user meets it: usage errors are one line and exit 2."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekd.arch.commands import validate_arch_command


def invoke(*args):
    return CliRunner().invoke(validate_arch_command, list(args))


def test_help_names_the_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--arch", "--data", "--json", "--cpu", "--min-agreement"):
        assert option in result.output


@pytest.mark.parametrize("args, message", [
    (["missing.tflite"], "missing.tflite: no such model file"),
    (["{model}", "--arch", "arm46"], "unknown architecture; did you mean arm64?"),
    (["{model}", "--cpu", "cortex-72"], "did you mean cortex-a72"),
    (["{txt}"], "expected a .tflite or .onnx model"),
    (["{model}", "--data", "nope.npz"], "--data nope.npz: not found"),
    (["{model}", "--data", "{txt}"], "cannot read as .npz"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, message):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not checked before the arguments")
    txt = tmp_path / "m.txt"
    txt.write_text("x")
    args = [a.format(model=model, txt=txt) for a in args]
    result = CliRunner().invoke(validate_arch_command, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("validate-arch: ") and message in lines[0]


def test_missing_tools_is_a_usage_error(tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv("PATH", "/nonexistent")
    result = invoke(str(model))
    assert result.exit_code == 2
    assert "qemu-user-static" in result.output and len(result.output.strip().splitlines()) == 1


def test_importing_the_command_loads_no_heavy_library():
    code = ("import sys; import edgekd.arch.commands, edgekd.arch; "
            "heavy = {'torch', 'numpy', 'onnxruntime', 'ai_edge_litert', 'onnx'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
