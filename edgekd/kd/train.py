"""The training loop every stage uses: seeded, resumable, with a progress bar.

A checkpoint is written atomically after each epoch (model, optimizer, schedule, history); if
the process is killed, the next run with the same checkpoint path resumes after the last
finished epoch and reaches the same result as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.console import progress
from edgekd.metrics import accuracy

# loss(model_logits, x, y, index_of_samples) -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ModeFn = Callable[[nn.Module, bool], None]


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings shared by teacher training, distillation and QAT."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def default_mode(model: nn.Module, training: bool) -> None:
    model.train(training)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512,
            mode: ModeFn = default_mode) -> np.ndarray:
    """Logits for every sample, in eval mode, without gradients."""
    mode(model, False)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[i:i + batch_size])).float().numpy())
    return np.concatenate(out)


def fit(model: nn.Module, loss_fn: LossFn, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
        y_val: np.ndarray, schedule: Schedule, seed: int, checkpoint: Path, desc: str,
        mode: ModeFn = default_mode) -> list[dict]:
    """Train `model` in place; returns the per-epoch history (loss, val accuracy)."""
    set_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr,
                                  weight_decay=schedule.weight_decay)
    steps = schedule.epochs * -(-len(x) // schedule.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=schedule.lr,
                                                    total_steps=steps, pct_start=0.15)
    history: list[dict] = []
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with progress(schedule.epochs, desc) as bar:
        bar.update(start)
        for epoch in range(start, schedule.epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
            mode(model, True)
            total, batches = 0.0, 0
            for i in range(0, len(x), schedule.batch_size):
                idx = order[i:i + schedule.batch_size]
                loss = loss_fn(model(xt[idx]), xt[idx], yt[idx], idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total, batches = total + loss.item(), batches + 1
            val_acc = accuracy(predict(model, x_val, mode=mode), y_val)
            history.append({"epoch": epoch + 1, "loss": total / batches, "val_accuracy": val_acc})
            _save_checkpoint(checkpoint, model, optimizer, scheduler, history, epoch + 1)
            bar.set_postfix(loss=f"{total / batches:.3f}", val=f"{val_acc:.3f}")
            bar.update(1)
    return history


def _save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, history: list[dict],
                     epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch}, tmp)
    tmp.replace(path)
