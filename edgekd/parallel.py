"""Data-parallel training under torchrun: launching, rank roles and leader-only writes.

`edgekd run PIPELINE --nproc N` starts N processes of `python -m edgekd run PIPELINE` with
torchrun (`launch`). Rank 0 runs the pipeline as usual: it alone runs the loop, trains the
teacher, writes checkpoints, artifacts, stage records and the report. When the loop reaches a
stage whose table entry trains data-parallel, it sends the other ranks that stage's job
(`dispatch`); they run the same stage function (edgekd.pipeline.serve), then wait for the
next job until rank 0 releases them. Stages themselves never call `dispatch`: they write
through `on_leader` and train through edgekd.kd.train.fit, which splits every global batch
across the ranks and averages the gradients (DistributedDataParallel; gloo on CPU, nccl with
one GPU per rank), so one step means the same as in one process with the same batch size.

Nothing heavy is imported at module import.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

EXIT_FILE_ENV = "EDGEKD_EXIT_FILE"
BACKEND_ENV = "EDGEKD_BACKEND"
T = TypeVar("T")


def launched() -> bool:
    """True inside a torchrun launch of more than one process."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True when a process group of more than one process is initialised."""
    if not launched():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside an active group)."""
    return int(os.environ.get("RANK", "0")) if active() else 0


def world_size() -> int:
    """Number of processes in the active group (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if active() else 1


def is_leader() -> bool:
    """True on rank 0, and in a single process."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def on_leader(write: Callable[[], T]) -> None:
    """Run `write` on rank 0 only, then wait until it is done everywhere (one process: just
    run it). Every file a training stage writes goes through here."""
    if is_leader():
        write()
    barrier()


def init() -> bool:
    """Join the process group (the backend `launch` chose: nccl for CUDA training, else
    gloo); True on rank 0.

    Rank 0 releases the others when the interpreter exits, in case nobody calls `release`."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        # Launched by plain torchrun (no backend chosen): nccl when this rank has a GPU.
        backend = os.environ.get(BACKEND_ENV) or (
            "nccl" if torch.cuda.device_count() > int(os.environ["LOCAL_RANK"]) else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
        if dist.get_rank() == 0:
            atexit.register(release)
    return dist.get_rank() == 0


def _broadcast(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def dispatch(job: dict) -> None:
    """On rank 0 of an active group: send `job` (plain data) to the other ranks."""
    if active() and is_leader():
        _broadcast(job)


def jobs() -> Iterator[dict]:
    """On ranks > 0: the jobs rank 0 dispatches, until it releases us."""
    while (job := _broadcast(None)) is not None:
        yield job
    import torch.distributed as dist

    dist.destroy_process_group()


_released = False


def release() -> None:
    """On rank 0: tell the waiting ranks that the pipeline is over (once)."""
    global _released
    if _released or not active() or not is_leader():
        return
    _released = True
    _broadcast(None)
    import torch.distributed as dist

    dist.destroy_process_group()


def finish(code: int) -> int:
    """On rank 0 at the end of a launched run: record `code` for `launch`, and return the
    process's own exit code. A run that ended cleanly (pass, config error, gate failed)
    releases the other ranks and exits 0; any other code exits 1 so torchrun stops the ranks
    that may be blocked in a collective."""
    if os.environ.get(EXIT_FILE_ENV):
        Path(os.environ[EXIT_FILE_ENV]).write_text(str(code))
    if code in (0, 2, 3):
        release()
        return 0
    return 1


def launch(nproc: int, args: list[str], backend: str = "gloo") -> int:
    """Run `edgekd <args>` in `nproc` processes with torchrun, joined by `backend` (nccl:
    one GPU per process); returns rank 0's exit code."""
    with tempfile.TemporaryDirectory(prefix="edgekd-torchrun-") as tmp:
        exit_file = Path(tmp) / "exit"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "edgekd", *args]
        proc = subprocess.run(cmd, env={**os.environ, EXIT_FILE_ENV: str(exit_file),
                                        BACKEND_ENV: backend})
        if exit_file.is_file():
            return int(exit_file.read_text())
        return proc.returncode or 1
