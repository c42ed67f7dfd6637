"""Where and in what arithmetic training runs: the device, autocast precision, channels_last,
torch.compile. Resolved once per run from the pipeline's `device:` / `precision:` / `compile:`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """The requested device does not exist here (no CUDA, fewer GPUs, no MPS)."""


@dataclass(frozen=True)
class Compute:
    """A resolved training device and precision (fp32, bf16 or fp16 autocast)."""

    device: torch.device
    precision: str = "fp32"
    compile: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last on CUDA (tensor cores want NHWC), contiguous elsewhere."""
        return torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """torch.autocast in this precision (a no-op context for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> dict:
        """What the report records: device (with the GPU's name) and precision."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {"device": str(self.device), **({"gpu": name} if name else {}),
                "precision": self.precision, "compile": self.compile}


CPU = Compute(torch.device("cpu"))


def cuda_count() -> int:
    """GPUs visible to this process (CUDA_VISIBLE_DEVICES applies)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_cuda(device: str) -> bool:
    """True when `device` (a pipeline's `device:`) resolves to CUDA on this machine."""
    return device.startswith("cuda") or (device == "auto" and cuda_count() > 0)


def resolve(device: str, precision: str = "auto", compile: bool = False,
            local_rank: int | None = None) -> Compute:
    """The Compute for a pipeline's `device:` / `precision:` / `compile:`.

    auto: CUDA when a GPU is visible, else the CPU; under a torchrun launch each rank takes
    GPU `local_rank`. Precision auto: bf16 on GPUs that support it, else fp32.
    Raises DeviceError when the device is not available here."""
    if device == "auto":
        device = "cuda" if cuda_count() else "cpu"
    if device.startswith("cuda"):
        count = cuda_count()
        index = local_rank if local_rank is not None else int(device.partition(":")[2] or 0)
        if count == 0:
            seen = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise DeviceError(f"{device}: no CUDA GPU is visible"
                              + (f" (CUDA_VISIBLE_DEVICES={seen!r})" if seen is not None else ""))
        if index >= count:
            raise DeviceError(f"{device}: GPU {index} requested, {count} visible")
        dev = torch.device("cuda", index)
    elif device == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("mps: this machine has no Apple GPU (MPS) available")
        dev = torch.device("mps")
    else:
        dev = torch.device("cpu")
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return Compute(dev, precision, compile)
