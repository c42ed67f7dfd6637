"""Settings within the documented bounds that no machine's memory holds: refused before the run
from an estimate of the inputs one training batch needs, or, when memory still runs out in a
stage, one line naming the stage and what to lower (exit 2), the traceback in error.log and
the stages finished before it kept. Physical memory is monkeypatched; nothing large is ever
allocated (an allocation of 2**60 bytes is refused by the allocator at once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd import exits, memory
from edgekd.cli import cli
from edgekd.config import Pipeline
from edgekd.schema import parse, read_yaml

GiB = 1 << 30


def tiny(tmp_path: Path, data: str = "{source: digits}", distill: str = "") -> Path:
    """The tiny digits pipeline (1 epoch each), its distill stage given `distill` fields."""
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\ndata: {data}\n"
                    "teacher: {arch: cnn, width: 4, depth: 1, train: {epochs: 1}}\n"
                    "student: {arch: cnn, width: 2, depth: 1}\ntarget: local\n"
                    f"stages:\n  - {{kind: distill, epochs: 1{distill}}}\n")
    return path


def pipeline(tmp_path: Path, **kw) -> Pipeline:
    return parse(Pipeline, read_yaml(tiny(tmp_path, **kw)), "p.yaml")


def test_a_reasonable_batch_fits_and_the_limit_is_the_machines_memory(tmp_path):
    """224 px RGB in batches of 256 is 154 MB of inputs: far from any refusal. The estimate
    refuses only a batch whose float32 inputs alone are more than the machine's memory."""
    p = pipeline(tmp_path, data="{source: digits, image_size: [224, 224]}",
                 distill=", batch_size: 256")
    assert memory.batch_problems(p, Path("p.yaml"), 50_000, (3, 224, 224), 24 * GiB) == []
    need = 256 * 3 * 224 * 224 * 4
    assert memory.batch_problems(p, Path("p.yaml"), 50_000, (3, 224, 224), need) == []
    (line,) = memory.batch_problems(p, Path("p.yaml"), 50_000, (3, 224, 224), need - 1)
    assert line.startswith("p.yaml: stages[0].batch_size 256 x data.image_size 224 x 224 x 3 "
                           "channel(s) needs 147 MiB per batch"), line
    assert "lower stages[0].batch_size or data.image_size" in line
    assert memory.physical_bytes() > GiB  # this machine's, as the run compares against


def test_a_batch_is_at_most_the_training_split(tmp_path):
    """batch_size 65536 on 1,000 training images is a batch of 1,000: the estimate counts
    what the data loader will hand over, so a large batch_size on small data still runs."""
    p = pipeline(tmp_path, data="{source: digits, image_size: [4096, 4096]}",
                 distill=", batch_size: 65536")
    (line,) = memory.batch_problems(p, Path("p.yaml"), 1_000, (1, 4096, 4096), 24 * GiB)
    assert "stages[0].batch_size 65536 (a batch is at most the 1,000 training samples)" in line
    assert "needs 62.5 GiB per batch" in line and "this machine has 24 GiB" in line
    assert memory.batch_problems(p, Path("p.yaml"), 300, (1, 4096, 4096), 24 * GiB) == []
    teacher = [t for t in memory.trainings(p) if t[0] == "teacher"]
    assert teacher == [("teacher", "teacher.train.batch_size", 64)]


def test_a_batch_beyond_the_machines_memory_is_refused_before_anything_runs(tmp_path,
                                                                           monkeypatch):
    """The run ended in torch's "DefaultCPUAllocator: can't allocate memory" (exit 1) or the
    kernel's OOM killer; it is one line naming the file, the fields and the figures, exit 2,
    before the teacher trains."""
    monkeypatch.setattr(memory, "physical_bytes", lambda: 16 << 20)  # a 16 MiB machine
    path = tiny(tmp_path, data="{source: digits, image_size: [64, 64]}",
                distill=", batch_size: 65536")
    out = tmp_path / "run"
    run = CliRunner().invoke(cli, ["run", str(path), "--out", str(out)])
    assert run.exit_code == exits.USAGE, run.output
    (line,) = run.output.strip().splitlines()
    assert line.startswith(f"{path}: stages[0].batch_size 65536 (a batch is at most the "), line
    assert "x data.image_size 64 x 64 x 1 channel(s) needs 16.8 MiB" in line
    assert "this machine has 16 MiB of memory" in line
    assert not (out / "teacher").exists() and not (out / "report.json").exists()


def test_running_out_of_memory_in_a_stage_is_one_line_exit_2_and_error_log(tmp_path,
                                                                         monkeypatch):
    """A real allocator refusal inside the distill stage: the stage and the settings to
    lower on one line (exit 2, as the estimate's refusal), the traceback in error.log, the
    finished teacher kept and the report written."""
    import torch

    import edgekd.stages.distill

    def greedy(*_args, **_kwargs):
        return torch.empty(2**60, dtype=torch.uint8)  # beyond any address space

    monkeypatch.setattr(edgekd.stages.distill, "run", greedy)
    path, out = tiny(tmp_path), tmp_path / "run"
    run = CliRunner().invoke(cli, ["run", str(path), "--out", str(out)])
    assert run.exit_code == exits.USAGE, run.output
    *progress, line = run.output.strip().splitlines()
    assert all(p.startswith(("[teacher]", "    ", "[distill] running")) for p in progress), \
        run.output
    assert line == (f"{path}: the distill stage ran out of memory asking for 1 EiB at once: "
                    "lower stages[0].batch_size (now 64) or the images' size (data.image_size); "
                    f"details: {out / 'error.log'}"), line
    assert "can't allocate memory" in (out / "error.log").read_text()
    assert (out / "teacher" / "stage.json").is_file() and (out / "report.json").is_file()
    assert "Traceback" not in run.output


def test_running_out_of_memory_before_the_stages_is_one_line_exit_2(tmp_path, monkeypatch):
    """Reading the data (its statistics) or building the teacher ran out: exit 2 naming
    data.image_size, nothing in the run directory but its lock and marker."""
    from edgekd.context import Context

    def greedy(*_args, **_kwargs):
        return np.empty(2**60, np.uint8)  # numpy's MemoryError, nothing allocated

    monkeypatch.setattr(Context, "build_model", greedy)
    path = tiny(tmp_path, data="{source: digits, image_size: [16, 16]}")
    out = tmp_path / "run"
    run = CliRunner().invoke(cli, ["run", str(path), "--out", str(out)])
    assert run.exit_code == exits.USAGE, run.output
    assert run.output.strip() == (f"{path}: reading the data and building the teacher ran out "
                                  "of memory asking for 1 EiB at once: lower data.image_size "
                                  "(now 16 x 16)"), run.output
    assert not (out / "teacher").exists()


@pytest.mark.parametrize("exc, oom, says", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 4398046511104 bytes. Error code 12"),
     True, "ran out of memory asking for 4 TiB at once"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.2 GiB total)"),
     True, "ran out of GPU memory asking for 2 GiB at once"),
    (RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "),
     True, "ran out of memory: a data-loading worker was killed"),
    (MemoryError(), True, "ran out of memory: lower"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False, None),
    (ValueError("out of memory"), False, None),
], ids=["cpu-allocator", "cuda", "worker-killed", "memory-error", "other", "not-runtime"])
def test_out_of_memory_errors_are_told_apart(tmp_path, exc, oom, says):
    p = pipeline(tmp_path)
    assert memory.out_of_memory(exc) is oom
    line = memory.described(exc, p, Path("p.yaml"), "distill")
    assert (line is None) if not oom else (says in line and line.startswith(
        "p.yaml: the distill stage ") and "stages[0].batch_size (now 64)" in line), line


def test_a_cuda_out_of_memory_error_is_out_of_memory():
    import torch

    assert memory.out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
