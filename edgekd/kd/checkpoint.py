"""Epoch checkpoints of `edgekd.kd.train.fit`: the model and the loss's own modules as one
bundle, their CPU snapshots (the best epoch's weights), and the atomic, fsynced checkpoint
file a killed run resumes from."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from edgekd.files import atomic_path


class Bundle(nn.Module):
    """The model and the loss's own trainable modules as one module, so one optimizer and one
    DistributedDataParallel wrapper cover both. Its forward is the model's."""

    def __init__(self, model: nn.Module, extra: nn.Module | None):
        super().__init__()
        self.model = model
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def snapshot(bundle: Bundle) -> dict:
    """A CPU copy of the model's (and extra's) weights, for the best epoch."""
    def copy(module: nn.Module | None) -> dict | None:
        return None if module is None else {
            k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    return {"model": copy(bundle.model), "extra": copy(bundle.extra)}


def restore(bundle: Bundle, state: dict) -> None:
    """Load `state["model"]` (and `state["extra"]`) into the bundle."""
    bundle.model.load_state_dict(state["model"])
    if bundle.extra is not None:
        bundle.extra.load_state_dict(state["extra"])


def resume_state(checkpoint: Path) -> dict | None:
    """The epoch checkpoint to resume from, or None: there is none, or it cannot be read (it is
    kept as `<name>.damaged`, one line says so, and training starts over)."""
    if not checkpoint.exists():
        return None
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds for a damaged file
        checkpoint.replace(checkpoint.with_name(checkpoint.name + ".damaged"))
        print(f"{checkpoint}: cannot be read ({type(exc).__name__}); training starts over (the "
              f"file is kept as {checkpoint.name}.damaged)", file=sys.stderr)


def save(path: Path, bundle: Bundle, optimizer, scheduler, history: list[dict], epoch: int,
         best: dict | None) -> None:
    """Write the checkpoint atomically (fsynced before it takes its name)."""
    extra = bundle.extra.state_dict() if bundle.extra is not None else None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"model": bundle.model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch,
                    "extra": extra, "best": best}, f)


def optimizer_to(optimizer: torch.optim.Optimizer, dev: torch.device) -> None:
    """Move a resumed optimiser's state (loaded on the CPU) to the training device."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(dev)
