"""Ctrl-C: a real `edgekd` process gets SIGINT (sent to its process group, as a terminal
does) and ends with edgekd's own line and exit 130, not click's "Aborted!" and exit 1; the
work done so far is kept and a rerun resumes from it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PIPELINE = """\
name: interrupt
seed: 0
data: {source: digits}
teacher: {arch: cnn, width: 8, depth: 2, train: {epochs: 5000}}
student: {arch: cnn, width: 4, depth: 1}
stages:
  - kind: distill
    epochs: 1
"""


class Edgekd:
    """`python -m edgekd ARGS` (main(), as the console script runs it) in a session of its
    own, its stderr read line by line."""

    def __init__(self, *args: str, cwd: Path):
        env = {**os.environ, "EDGEKD_PROGRESS": "auto"}  # epoch lines on a non-terminal
        # SIGINT back to its default first: a test run started in the background by a
        # non-interactive shell (nohup ... &) has it ignored, and a child inherits that.
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                      signal.SIG_DFL))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.seen}"
                continue
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s: {self.seen}")

    def interrupt(self) -> tuple[int, list[str]]:
        """Ctrl-C: SIGINT to the whole process group. The exit code and every stderr line."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(60)
        time.sleep(0.2)  # let the reader drain the pipe
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, self.seen


def assert_interrupted(code: int, lines: list[str], message: str) -> None:
    assert code == 130, lines
    assert [line for line in lines if line.strip()][-1] == message
    assert not any("Aborted!" in line or "Traceback" in line for line in lines), lines


@pytest.mark.slow
def test_ctrl_c_in_run_exits_130_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    args = ("run", "p.yaml", "--out", "run")
    first = Edgekd(*args, cwd=tmp_path)
    first.wait_for(r"epoch 1/5000 ")  # written after the epoch's checkpoint
    code, lines = first.interrupt()
    assert_interrupted(code, lines, "interrupted: finished stages and the last epoch "
                                    "checkpoint are kept; rerun to resume")
    assert not (tmp_path / "run" / "error.log").exists()  # not an internal error
    assert list((tmp_path / "run").rglob("teacher.ckpt"))

    again = Edgekd(*args, cwd=tmp_path)
    resumed = int(again.wait_for(r"epoch (\d+)/5000 ").group(1))
    assert resumed >= 2  # the first epoch line of the rerun is past the kept epochs
    code, lines = again.interrupt()
    assert code == 130, lines


@pytest.mark.slow
def test_sigterm_in_run_exits_143_with_one_line_and_keeps_the_checkpoint(tmp_path):
    """`kill PID` (a scheduler's stop) ended with the shell's bare "Terminated", exit 143."""
    (tmp_path / "p.yaml").write_text(PIPELINE)
    run = Edgekd("run", "p.yaml", "--out", "run", cwd=tmp_path)
    run.wait_for(r"epoch 1/5000 ")
    os.kill(run.proc.pid, signal.SIGTERM)
    code = run.proc.wait(60)
    time.sleep(0.2)
    while not run.lines.empty():
        run.seen.append(run.lines.get())
    assert code == 143, run.seen
    assert [line for line in run.seen if line.strip()][-1] == (
        "terminated (SIGTERM): finished stages and the last epoch checkpoint are kept; rerun "
        "to resume")
    assert not any("Traceback" in line for line in run.seen)
    assert list((tmp_path / "run").rglob("teacher.ckpt"))
    assert not (tmp_path / "run" / "error.log").exists()


@pytest.mark.slow
def test_ctrl_c_in_profile_exits_130_and_leaves_nothing(tmp_path):
    """The device's Python is a stand-in that hangs (and, like a remote process, does not see
    the SIGINT): edgekd stops, removes its work folder and writes no result."""
    started = tmp_path / "started"
    python = tmp_path / "hanging-python"
    python.write_text(f"#!/bin/sh\ntrap '' INT\ntouch {started}\nexec sleep 120\n")
    python.chmod(0o755)
    work = tmp_path / "device-work"
    (tmp_path / "dev.yaml").write_text(f"transport: local\npython: {python}\n"
                                       f"work_dir: {work}\nretries: 0\n")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    # a real model file (edgekd checks it before profiling); the runner hangs before reading it
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              tmp_path / "m.onnx")
    run = Edgekd("profile", "m.onnx", "--device", "dev.yaml", "--json", "out.json",
                 cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline and run.proc.poll() is None, run.seen
        time.sleep(0.1)
    code, lines = run.interrupt()
    assert_interrupted(code, lines, "interrupted: the measurement was stopped; nothing was "
                                    "written")
    assert not (tmp_path / "out.json").exists()
    assert list(work.iterdir()) == []
