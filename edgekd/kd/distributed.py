"""Multi-process training under torchrun: the distill and quantize stages train
data-parallel (DistributedDataParallel; gloo on CPU, nccl on GPU).

Rank 0 runs the pipeline as usual: it alone trains the teacher, writes checkpoints, artifacts,
stage records and the report. The other ranks only follow: when rank 0 starts a distributed
stage it sends them the stage's config and context (`dispatch`), they run the same stage
function with writes turned off (`serve`), and go back to waiting. Every global batch is
split across the ranks and gradients are averaged, so one step means the same as in one
process with the same batch size; BatchNorm statistics are rank 0's (DDP broadcasts them).

Nothing heavy is imported at module import: the CLI uses `launched()` and `launch()`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXIT_FILE_ENV = "EDGEKD_EXIT_FILE"
DISTRIBUTED_STAGES = ("distill", "quantize")


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
    return int(os.environ.get("RANK", "0")) if active() else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if active() else 1


def is_leader() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def init() -> bool:
    """Join the process group (gloo on CPU, nccl with CUDA); True on rank 0.

    Rank 0 releases the others when the interpreter exits, in case nobody calls `release`."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
        if dist.get_rank() == 0:
            atexit.register(release)
    return dist.get_rank() == 0


def device():
    """The device this rank trains on: its GPU under nccl, else the CPU."""
    import torch

    if active() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cpu")


def _broadcast(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def dispatch(kind: str, cfg, ctx) -> None:
    """On rank 0 of an active group: make the other ranks run stage `kind` with us."""
    if not active() or not is_leader():
        return
    _broadcast({"kind": kind, "cfg": cfg.model_dump(mode="json"), "source": str(ctx.source),
                "run_dir": str(ctx.run_dir), "data_key": ctx.data_key,
                "teacher": ctx.teacher_artifact.as_dict() if ctx.teacher_artifact else None,
                "results": {k: r.as_dict() for k, r in ctx.results.items()}})


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


def serve() -> int:
    """On ranks > 0: run the stages rank 0 dispatches until it releases us; the exit code."""
    from pydantic import TypeAdapter

    from edgekd.artifacts import Artifact, StageResult
    from edgekd.config import Stage, load_pipeline
    from edgekd.context import Context
    from edgekd.stages import STAGES

    init()
    os.environ["EDGEKD_PROGRESS"] = "0"  # one progress bar: rank 0's
    while (job := _broadcast(None)) is not None:
        source = Path(job["source"])
        ctx = Context(load_pipeline(source, check_target=False), source, Path(job["run_dir"]),
                      job["data_key"],
                      {k: StageResult.from_dict(r) for k, r in job["results"].items()})
        if job["teacher"]:
            ctx.teacher_artifact = Artifact(**{**job["teacher"],
                                               "path": Path(job["teacher"]["path"])})
        STAGES[job["kind"]](TypeAdapter(Stage).validate_python(job["cfg"]), ctx)
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


def launch(nproc: int, args: list[str]) -> int:
    """Run `edgekd <args>` in `nproc` processes with torchrun; rank 0's exit code."""
    with tempfile.TemporaryDirectory(prefix="edgekd-torchrun-") as tmp:
        exit_file = Path(tmp) / "exit"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "edgekd.kd.launch", *args]
        proc = subprocess.run(cmd, env={**os.environ, EXIT_FILE_ENV: str(exit_file)})
        if exit_file.is_file():
            return int(exit_file.read_text())
        return proc.returncode or 1
