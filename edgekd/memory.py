"""Memory: whether a training batch can fit in this machine at all, and out-of-memory failures
told apart from other errors. Both end a run with exit 2 and one line naming the settings to
lower (batch_size, data.image_size): the pipeline asks for more than the machine has.

Nothing here imports torch: an out-of-memory error is recognised by its type and message.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from edgekd.schema import ConfigError

FLOAT32_BYTES = 4
"""A model's input is float32 NCHW (edgekd.data.loading)."""


def physical_bytes() -> int | None:
    """The machine's physical memory in bytes; None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def shown(n: float) -> str:
    """Bytes in words, in binary units: "12 TiB", "24 GiB", "512 MiB"."""
    for power, unit in ((6, "EiB"), (5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024 ** power:
            return f"{n / 1024 ** power:.3g} {unit}"
    return f"{n:.0f} B"


def trainings(pipeline) -> list[tuple[str, str, int]]:
    """(stage kind, batch_size field, batch size) of every training the pipeline runs: the
    teacher's `train:`, the distill stage and a QAT quantize stage."""
    found = [("teacher", "teacher.train.batch_size", pipeline.teacher.train.batch_size)] \
        if pipeline.teacher.train is not None else []
    for i, stage in enumerate(pipeline.stages):
        if stage.kind == "distill" or (stage.kind == "quantize" and stage.method == "qat"):
            found.append((stage.kind, f"stages[{i}].batch_size", stage.batch_size))
    return found


def batch_problems(pipeline, source: Path, samples: int, shape: tuple[int, int, int],
                   available: int, kind: str | None = None) -> list[str]:
    """One line for each training (of stage `kind` only, when given) whose batch of float32
    inputs alone (batch_size, at most the `samples` of the train split, x C x H x W `shape` x
    4 bytes) is more than `available` bytes: such a batch cannot be held, let alone trained
    on (activations and gradients come on top, so this refuses only what can never fit)."""
    channels, height, width = shape
    image = f"data.image_size {height} x {width}" if pipeline.data.image_size else \
        f"the data's {height} x {width} images"
    problems = []
    for _kind, field, size in [t for t in trainings(pipeline) if kind in (None, t[0])]:
        batch = min(size, samples)
        need = batch * channels * height * width * FLOAT32_BYTES
        if need > available:
            capped = f" (a batch is at most the {samples:,} training samples)" \
                if batch < size else ""
            problems.append(
                f"{source}: {field} {size}{capped} x {image} x {channels} channel(s) needs "
                f"{shown(need)} per batch for its float32 inputs alone; this machine has "
                f"{shown(available)} of memory: lower {field} or data.image_size")
    return problems


def check_batches(ctx, kind: str | None = None) -> None:
    """ConfigError (exit 2, one line per training) when a training batch of the pipeline (of
    stage `kind` only, when given) cannot fit in this machine's memory (`batch_problems`).
    Reads the data's split sizes and shape (no images) when there is a training to check."""
    available = physical_bytes()
    if not available or not any(kind in (None, k) for k, _, _ in trainings(ctx.pipeline)):
        return
    splits = ctx.splits()
    problems = batch_problems(ctx.pipeline, ctx.source, len(splits.train), splits.input_shape,
                              available, kind)
    if problems:
        raise ConfigError(problems)


_OUT_OF_MEMORY = re.compile(r"can't allocate memory|out of memory|Caught MemoryError|"
                            r"killed by signal: Killed")
"""torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory"), CUDA and MPS ("CUDA
out of memory", "MPS backend out of memory"), a MemoryError in a DataLoader worker, and a
worker the kernel's out-of-memory killer ended (SIGKILL)."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says that memory ran out (on the CPU or a GPU)."""
    if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError"
                                           for c in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and bool(_OUT_OF_MEMORY.search(str(exc)[:10_000]))


def described(exc: BaseException, pipeline, source: Path, kind: str | None,
              run_dir: Path | None = None) -> str | None:
    """One line for an out-of-memory failure `exc` of stage `kind` (None: before the stages,
    while reading the data and building the teacher), naming the settings to lower, and the
    error.log of `run_dir` when given; None when `exc` is another error."""
    if not out_of_memory(exc):
        return None
    text = str(exc)[:10_000]
    why = ": a data-loading worker was killed, as the kernel does when memory runs out" \
        if "killed by signal" in text else _asked(text)
    where = "GPU memory" if re.search(r"CUDA|MPS|GPU", text) else "memory"
    size = pipeline.data.image_size
    settings = [f"{field} (now {batch})" for k, field, batch in trainings(pipeline) if k == kind]
    settings.append(f"data.image_size (now {size[0]} x {size[1]})" if size else
                    "the images' size (data.image_size)")
    what = f"the {kind} stage" if kind else "reading the data and building the teacher"
    details = f"; details: {run_dir / 'error.log'}" if run_dir else ""
    return f"{source}: {what} ran out of {where}{why}: lower {' or '.join(settings)}{details}"


def _asked(text: str) -> str:
    """" asking for 16 GiB at once" when an allocator's message says how much, else ""."""
    exact = re.search(r"allocate (\d+) bytes", text)  # torch's CPU allocator
    if exact:
        return f" asking for {shown(int(exact.group(1)))} at once"
    rounded = re.search(r"allocate ([\d.]+) ?([KMGTPE]i?B)", text)  # numpy ("512. MiB"), CUDA
    return f" asking for {float(rounded.group(1)):g} {rounded.group(2)} at once" if rounded \
        else ""


@contextmanager
def refused_when_out(pipeline, source: Path):
    """Around the work before the stages: an out-of-memory error becomes a ConfigError (exit
    2, one line naming what to lower) rather than an internal error."""
    try:
        yield
    except Exception as exc:
        line = described(exc, pipeline, source, None)
        if line is None:
            raise
        raise ConfigError([line]) from None
