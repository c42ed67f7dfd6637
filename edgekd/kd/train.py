"""The training loop every stage uses: seeded, resumable, with progress, keeping the best epoch.

A checkpoint is written atomically after each epoch (model, optimizer, schedule, history, the
best epoch's weights); if the process is killed, the next run with the same checkpoint path
resumes after the last finished epoch and reaches the same result as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd import parallel as ranks
from edgekd.config import OptimizerConfig
from edgekd.console import EpochReport, progress
from edgekd.files import atomic_path
from edgekd.metrics import accuracy

# loss(model_logits, x, y, index_of_samples) -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ModeFn = Callable[[nn.Module, bool], None]


@dataclass(frozen=True)
class Hyperparameters:
    """Optimisation settings shared by teacher training, distillation and QAT."""

    epochs: int
    lr: float
    """Peak learning rate."""
    batch_size: int
    """Global batch: under torchrun it is split across the ranks."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) or L2 (SGD) weight decay."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimiser, schedule, warm-up, clipping (default AdamW, one-cycle, no clipping)."""
    val_every: int = 1
    """Validate every this many epochs, and after the last."""

    @classmethod
    def of(cls, cfg) -> Hyperparameters:
        """From a config with epochs, lr, batch_size, optimizer, val_every (and maybe
        weight_decay): TrainConfig, DistillStage, QuantizeStage."""
        return cls(cfg.epochs, cfg.lr, cfg.batch_size, getattr(cfg, "weight_decay", 0.0),
                   cfg.optimizer, cfg.val_every)


def set_seed(seed: int) -> None:
    """Seed torch's and numpy's global generators: call before building any model."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def default_mode(model: nn.Module, training: bool) -> None:
    """Switch an ordinary module between train and eval mode."""
    model.train(training)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512,
            mode: ModeFn = default_mode) -> np.ndarray:
    """Logits for every sample, in eval mode, without gradients."""
    mode(model, False)
    dev = next(model.parameters(), torch.empty(0)).device
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[i:i + batch_size]).to(dev)
            out.append(model(batch).float().cpu().numpy())
    return np.concatenate(out)


def fit(model: nn.Module, loss_fn: LossFn, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
        y_val: np.ndarray, settings: Hyperparameters, seed: int, checkpoint: Path, desc: str,
        mode: ModeFn = default_mode, extra: nn.Module | None = None,
        parallel: bool = False) -> list[dict]:
    """Train `model` in place; returns the per-epoch history.

    Each history entry has `epoch`, `loss` (the epoch's mean), `loss_<name>` for each named
    part, `val_accuracy`, `images_per_s` (training samples / s of this process) and `kept`.
    When training ends, the model (and `extra`) hold the weights of the epoch with the best
    validation accuracy (the latest of equals), the one entry with `kept: true`.

    `loss_fn` may return the loss alone or `(loss, parts)`, a dict of named scalar terms
    (tensors or floats) whose epoch means join the history. `extra` holds trainable modules
    the loss uses besides the model (hint adapters, a mutual-learning peer, an EMA copy):
    optimised with it (where they require gradients) and saved in its checkpoints. `parallel`
    trains data-parallel over the processes of a torchrun launch (edgekd.parallel): each global
    batch is split across the ranks, gradients are averaged, rank 0 writes the checkpoints.
    Loss values stay on the device during an epoch: one host sync per epoch, not per step.
    """
    set_seed(seed)
    bundle = _Bundle(model, extra)
    params = [p for p in bundle.parameters() if p.requires_grad]
    optimizer, scheduler = optimizer_and_schedule(params, settings,
                                                  -(-len(x) // settings.batch_size))
    history: list[dict] = []
    start, best = 0, None
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        _restore(bundle, state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start, best = state["history"], state["epoch"], state.get("best")
    parallel = parallel and ranks.active()
    rank, world = (ranks.rank(), ranks.world_size()) if parallel else (0, 1)
    dev = ranks.device() if parallel else torch.device("cpu")
    net = _data_parallel(bundle.to(dev)) if parallel else bundle
    data = (torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev))
    with progress(settings.epochs, desc if rank == 0 else "") as bar:
        bar.update(start)
        report = EpochReport(bar, desc if rank == 0 else "", settings.epochs)
        loop_began = time.perf_counter()
        for epoch in range(start, settings.epochs):
            began = time.perf_counter()
            mode(model, True)
            if extra is not None:
                extra.train(True)
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
            sums = _train_epoch(net, loss_fn, data, order, settings.batch_size, rank, world,
                                (optimizer, scheduler, settings.optimizer.clip_grad_norm))
            if parallel:
                sums = _sync_epoch(bundle, sums)
            batches = sums.pop("#")
            validate = (epoch + 1) % settings.val_every == 0 or epoch + 1 == settings.epochs
            val_acc = accuracy(predict(model, x_val, mode=mode), y_val) if validate else None
            history.append({"epoch": epoch + 1, "loss": sums.pop("") / batches,
                            **{f"loss_{k}": v / batches for k, v in sums.items()},
                            "val_accuracy": val_acc,
                            "images_per_s": len(x) / world / (time.perf_counter() - began)})
            if val_acc is not None and (best is None or val_acc >= best["val_accuracy"]):
                best = {"epoch": epoch + 1, "val_accuracy": val_acc, **_snapshot(bundle)}
            if rank == 0:
                _save_checkpoint(checkpoint, bundle, optimizer, scheduler, history, epoch + 1,
                                 best)
            if parallel:
                ranks.barrier()
            per_epoch = (time.perf_counter() - loop_began) / (epoch + 1 - start)
            report(history[-1], per_epoch * (settings.epochs - epoch - 1))
    bundle.cpu()
    if best is not None:
        _restore(bundle, best)
    for entry in history:
        entry["kept"] = best is not None and entry["epoch"] == best["epoch"]
    return history


def optimizer_and_schedule(params: list[nn.Parameter], settings: Hyperparameters,
                           steps_per_epoch: int):
    """The optimiser and a per-step learning-rate scheduler for `settings`.

    onecycle: torch's OneCycleLR peaking at lr after 15 % of the steps (Smith & Topin 2019);
    cosine: linear warm-up over `warmup_epochs`, then cosine decay to 0 (Loshchilov & Hutter
    2017); step: the same warm-up, then lr x gamma every `step_epochs`."""
    opt = settings.optimizer
    if opt.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=opt.momentum,
                                    weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.epochs * steps_per_epoch
    if opt.schedule == "onecycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.lr, total_steps=total, pct_start=0.15)
    warmup = min(opt.warmup_epochs * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if opt.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
        return opt.gamma ** ((step - warmup) // (opt.step_epochs * steps_per_epoch))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(net: nn.Module, loss_fn: LossFn, data: tuple[torch.Tensor, torch.Tensor],
                 order: torch.Tensor, batch_size: int, rank: int, world: int,
                 stepping: tuple) -> dict[str, float]:
    """One pass over `order`; the sums of the loss and its named parts (and "#": batches).
    `stepping` is (optimizer, scheduler, clip_grad_norm or None)."""
    optimizer, scheduler, clip = stepping
    xt, yt = data
    sums: dict[str, torch.Tensor | float] = {}
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if world > 1:
            if len(idx) < world:
                continue  # a last batch too small to share: skipped on every rank
            idx = idx.tensor_split(world)[rank]
        on_device = idx.to(xt.device)
        result = loss_fn(net(xt[on_device]), xt[on_device], yt[on_device], idx)
        loss, parts = result if isinstance(result, tuple) else (result, {})
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], clip)
        optimizer.step()
        scheduler.step()
        for key, value in {"": loss, **parts}.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            sums[key] = sums.get(key, 0.0) + value
        sums["#"] = sums.get("#", 0.0) + 1.0
    return {k: float(v) for k, v in sums.items()}  # the epoch's one host sync


def _snapshot(bundle: _Bundle) -> dict:
    """A CPU copy of the model's (and extra's) weights, for the best epoch."""
    def copy(module: nn.Module | None) -> dict | None:
        return None if module is None else {
            k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    return {"model": copy(bundle.model), "extra": copy(bundle.extra)}


def _restore(bundle: _Bundle, state: dict) -> None:
    """Load `state["model"]` (and `state["extra"]`) into the bundle."""
    bundle.model.load_state_dict(state["model"])
    if bundle.extra is not None:
        bundle.extra.load_state_dict(state["extra"])


class _Bundle(nn.Module):
    """The model and the loss's own trainable modules as one module, so one optimizer and one
    DistributedDataParallel wrapper cover both. Its forward is the model's."""

    def __init__(self, model: nn.Module, extra: nn.Module | None):
        super().__init__()
        self.model = model
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _data_parallel(bundle: nn.Module) -> nn.Module:
    """DDP over the bundle. Parameters of `extra` are used by the loss outside forward; DDP's
    gradient hooks still fire for them in the same backward, so they are averaged too."""
    from torch.nn.parallel import DistributedDataParallel

    dev = ranks.device()
    # Buffers (BatchNorm statistics) follow rank 0's at every forward, DDP's default.
    return DistributedDataParallel(bundle, device_ids=[dev] if dev.type == "cuda" else None)


def _sync_epoch(bundle: nn.Module, sums: dict[str, float]) -> dict[str, float]:
    """Average the epoch's loss sums over the ranks, and give every rank rank 0's buffers
    (BatchNorm running statistics) so validation sees the same model everywhere."""
    import torch.distributed as dist

    keys = sorted(sums)
    total = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(total)
    for buffer in bundle.buffers():
        dist.broadcast(buffer, src=0)
    world = dist.get_world_size()
    return {k: v / world for k, v in zip(keys, total.tolist(), strict=True)}


def _save_checkpoint(path: Path, bundle: _Bundle, optimizer, scheduler, history: list[dict],
                     epoch: int, best: dict | None) -> None:
    extra = bundle.extra.state_dict() if bundle.extra is not None else None
    with atomic_path(path) as tmp:
        torch.save({"model": bundle.model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch,
                    "extra": extra, "best": best}, tmp)
