"""What the CLI does with input it cannot use and with errors nobody expected: one line, the
documented exit code, never a traceback on the terminal."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd import exits
from edgekd.cli import cli


@pytest.mark.parametrize("content, says", [
    (b"", "not a report.json"),
    (b"{", "not a report.json"),
    (b"\xfe\xff\x00garbage", "not a report.json"),
    (b"[1, 2]", "not an edgekd report"),
    (b'{"verdict": "pass"}', "not an edgekd report (no pipeline, target"),
    (b"[" * 100_000, "not a report.json"),
])
def test_report_on_a_file_that_is_not_a_report(tmp_path, content, says):
    (tmp_path / "report.json").write_bytes(content)
    run = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert run.exit_code == exits.USAGE and says in run.output
    assert "Traceback" not in run.output


def sealed(doc: dict) -> dict:
    """`doc` with the digest edgekd gives its reports (no stage records)."""
    from edgekd.report import _digest

    doc = {**doc, "stage_records": {}}
    return {**doc, "sha256": _digest(doc)}


def test_report_with_fields_of_the_wrong_shape(tmp_path):
    doc = {"pipeline": "p", "verdict": "pass", "target": "local", "started": "now",
           "duration_s": 1.0, "checks": [], "stages": 5, "environment": {}}
    (tmp_path / "report.json").write_text(json.dumps(sealed(doc)))
    run = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert run.exit_code == exits.USAGE and "fields of the wrong shape" in run.output


def test_an_unexpected_error_is_one_line_exit_1_and_a_log(monkeypatch, tmp_path):
    import edgekd.report

    def broken(*_args, **_kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(edgekd.report, "write_html", broken)
    (tmp_path / "report.json").write_text(json.dumps(sealed(
        {"pipeline": "p", "verdict": "pass", "target": "local", "started": "now",
         "duration_s": 1.0, "checks": [], "stages": [], "environment": {}})))
    run = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert run.exit_code == exits.INTERNAL
    assert "internal error in edgekd report: RuntimeError: something nobody planned for" \
        in run.output
    log = Path(re.search(r"details: (\S+)", run.output).group(1))
    assert "Traceback" in log.read_text() and "Traceback" not in run.output
    log.unlink()


def test_profile_says_what_data_it_takes_and_refuses_a_json_folder_before_measuring(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    run = CliRunner().invoke(cli, ["profile", str(model), "--device", "local", "--data",
                                   str(tmp_path)])
    assert run.exit_code == exits.USAGE and "a folder; profile takes an .npz with x" in run.output
    run = CliRunner().invoke(cli, ["profile", str(model), "--device", "local", "--json",
                                   str(tmp_path)])
    assert run.exit_code == exits.USAGE and "--json" in run.output and "a folder" in run.output
    # data that cannot be the model's input is the user's input, not the model failing
    import numpy as np

    data = tmp_path / "wrong.npz"
    np.savez(data, x=np.zeros((5, 3), np.float32), y=np.zeros(5, np.int64))
    run = CliRunner().invoke(cli, ["profile", str(model), "--device", "local", "--runs", "2",
                                   "--data", str(data)])
    assert run.exit_code == exits.USAGE
    assert "--data: samples are 3 but the model takes 4" in run.output


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path):
    """Two runs on one --out shared temporary names and one died mid-stage; the run directory
    is locked, and the second run is one line, exit 2, with nothing touched."""
    from edgekd.files import exclusive

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(TINY)
    out = tmp_path / "runs" / "p"
    with exclusive(out / ".lock"):  # a run in progress (this process, another descriptor)
        run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(out)])
    assert run.exit_code == exits.USAGE, run.output
    assert f"{out}: another edgekd process (pid {os.getpid()}) is using" in run.output
    assert "Traceback" not in run.output
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


TINY = ("name: p\ndata: {source: digits}\n"
        "teacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 1}}\n"
        "student: {arch: cnn, width: 2, depth: 1}\ntarget: local\n"
        "stages:\n  - {kind: distill, epochs: 1}\n")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(OPTIONS) -> a fresh tmpfs mounted with OPTIONS (a read-only one, a tiny one);
    unmounted afterwards. Skips where mounting is not allowed (not root)."""
    import os
    import subprocess

    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if os.geteuid() != 0 or done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or 'not root'}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_read_only_out_is_one_line_and_exit_2(tmp_path, tmpfs):
    """A read-only --out was a traceback (OSError, exit 1); as root, file modes do not stop a
    write, so the file system itself is read-only."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(TINY)
    out = tmpfs("size=1m,ro") / "run"
    run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(out)])
    assert run.exit_code == exits.USAGE, run.output
    assert run.output.strip() == f"{out}: cannot write the run directory (--out): " \
                                 "Read-only file system"


def test_a_disk_that_fills_up_names_itself_and_leaves_a_log(tmp_path, tmpfs):
    """torch.save on a full disk says `unexpected pos N vs M`; the run says the disk is full,
    exit 1 with error.log beside report.json, and no temporary file is left behind."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(TINY.replace("width: 4, depth: 1", "width: 64, depth: 2"))
    out = tmpfs("size=96k") / "run"
    run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(out)])
    assert run.exit_code == exits.INTERNAL, run.output
    assert f"teacher failed: the disk holding {out} is full (" in run.output
    assert "Traceback" not in run.output
    assert (out / "error.log").is_file() and (out / "report.json").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_verbose_lets_the_converters_speak(monkeypatch, capfd):
    """Third-party output (written straight to the file descriptors, as C++ converters do)
    stays off the terminal unless --verbose (or EDGEKD_VERBOSE=1)."""
    import os

    from edgekd.console import quiet

    # set (empty), not deleted: monkeypatch records it, so teardown removes what --verbose sets
    monkeypatch.setenv("EDGEKD_VERBOSE", "")
    with quiet():
        os.write(2, b"converter chatter\n")
    assert "converter chatter" not in capfd.readouterr().err
    run = CliRunner().invoke(cli, ["--verbose", "validate", "pipelines/mobile.yaml"])
    assert run.exit_code == 0 and os.environ.get("EDGEKD_VERBOSE") == "1"
    with quiet():
        os.write(2, b"converter chatter\n")
    assert "converter chatter" in capfd.readouterr().err
    monkeypatch.delenv("EDGEKD_VERBOSE")


def test_training_that_diverges_stops_with_one_line_and_exit_2(tmp_path):
    """A learning rate far too high drives the loss to NaN; the run stops at that epoch with
    one line saying so and what to try, rather than handing on a chance-level teacher."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(TINY.replace("train: {epochs: 1}", "train: {epochs: 1, lr: 1.0e+38}"))
    run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(tmp_path / "run")])
    assert run.exit_code == exits.USAGE, run.output
    *progress, line = run.output.strip().splitlines()
    assert progress == ["[teacher] running"], run.output
    assert line.startswith("teacher: the loss became non-finite (nan) at epoch 1 of 1; "), line
    assert "lower lr (now 1e+38)" in line and "Traceback" not in run.output


def test_an_internal_error_before_the_stages_logs_in_the_run_directory(monkeypatch, tmp_path):
    """Reading the data or the teacher (before any stage) failed unexpectedly: the traceback
    went to /tmp while the README promises runs/<name>/error.log. It goes to the run
    directory once edgekd has made it (its lock is there); before that, to a file the
    `details:` line names."""
    import edgekd.pipeline

    def broken(*_args, **_kwargs):
        raise RuntimeError("something nobody planned for")

    pipeline, out = tmp_path / "p.yaml", tmp_path / "run"
    pipeline.write_text(TINY)
    monkeypatch.setattr(edgekd.pipeline, "_preflight", broken)
    run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(out)])
    assert run.exit_code == exits.INTERNAL, run.output
    assert f"details: {out / 'error.log'} " in run.output and "Traceback" not in run.output
    assert "something nobody planned for" in (out / "error.log").read_text()
    monkeypatch.setattr(edgekd.pipeline, "load", broken)  # before the run directory exists
    elsewhere = tmp_path / "never"
    run = CliRunner().invoke(cli, ["run", str(pipeline), "--out", str(elsewhere)])
    assert run.exit_code == exits.INTERNAL and not elsewhere.exists()
    log = Path(re.search(r"details: (\S+)", run.output).group(1))
    assert "Traceback" in log.read_text()
    log.unlink()


def test_a_report_is_drawn_again_until_its_run_directory_changes(tmp_path):
    from edgekd.files import write_json
    from edgekd.report import seal, stale

    write_json(tmp_path / "distill" / "stage.json", {"kind": "distill", "key": "k"})
    doc = seal({"pipeline": "p", "verdict": "pass", "stages": [{"kind": "teacher"},
                                                                {"kind": "distill"}]}, tmp_path)
    assert doc["stage_records"]["teacher"] is None and stale(doc, tmp_path) is None
    write_json(tmp_path / "teacher" / "stage.json", {"kind": "teacher", "key": "k"})
    assert stale(doc, tmp_path).startswith("teacher/stage.json changed")
    (tmp_path / "distill" / "stage.json").unlink()  # its folder removed: said as missing
    assert stale(doc, tmp_path).startswith("distill/stage.json is missing")
    assert "digest is missing" in stale({k: v for k, v in doc.items() if k != "sha256"},
                                        tmp_path)  # deleting the digest does not skip the check


def test_a_report_whose_shipped_file_is_gone_or_replaced_is_out_of_date(tmp_path):
    """The stage records are unchanged, but the int8 file the report passed was deleted or
    replaced: `edgekd report` says which, and draws nothing. A moved run directory still
    finds its files."""
    import shutil

    from edgekd.artifacts import Artifact
    from edgekd.report import seal

    run = tmp_path / "run"
    model = run / "export" / "student_int8.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"int8 model")
    doc = seal({"pipeline": "p", "verdict": "pass", "target": "local", "started": "now",
                "duration_s": 1.0, "checks": [], "stages": [], "environment": {},
                "run_dir": str(run),
                "artifacts": [Artifact.of("student_int8_onnx", model, "onnx_int8").as_dict()]},
               run)
    (run / "report.json").write_text(json.dumps(doc))
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    assert CliRunner().invoke(cli, ["report", str(moved)]).exit_code == 0
    (moved / "export" / "student_int8.onnx").write_bytes(b"another model")
    again = CliRunner().invoke(cli, ["report", str(moved)])
    assert again.exit_code == exits.USAGE
    assert "export/student_int8.onnx (student_int8_onnx) changed since" in again.output
    (moved / "export" / "student_int8.onnx").unlink()
    again = CliRunner().invoke(cli, ["report", str(moved)])
    assert "export/student_int8.onnx (student_int8_onnx) is missing" in again.output


def test_report_waits_for_the_run_that_holds_the_directory(tmp_path):
    from edgekd.files import exclusive

    (tmp_path / "report.json").write_text(json.dumps(sealed(
        {"pipeline": "p", "verdict": "pass", "target": "local", "started": "now",
         "duration_s": 1.0, "checks": [], "stages": [], "environment": {}})))
    with exclusive(tmp_path / ".lock"):
        run = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert run.exit_code == exits.USAGE and "an edgekd run (pid " in run.output
    assert not (tmp_path / "report.html").exists()
    assert CliRunner().invoke(cli, ["report", str(tmp_path)]).exit_code == 0


def test_a_run_whose_output_pipe_closes_goes_on_to_its_report(tmp_path):
    """`edgekd run p.yaml | head -1`: the next line raised BrokenPipeError, exit 1 with an
    error.log, training stopped mid-stage. The rest of the output goes nowhere; the run ends
    as it would have."""
    import subprocess
    import sys

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(TINY)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "EDGEKD_PROGRESS": "0"}
    for out, streams in (("run", ""), ("both", "2>&1")):  # stdout alone, and with stderr
        done = subprocess.run(
            ["bash", "-c", f"'{sys.executable}' -m edgekd run p.yaml --out {out} {streams} | "
             "head -c 1 >/dev/null; echo ${PIPESTATUS[0]}"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=600)
        assert done.stdout.strip() == "0", done.stdout + done.stderr
        assert json.loads((tmp_path / out / "report.json").read_text())["verdict"] == "pass"
        assert not (tmp_path / out / "error.log").exists()
