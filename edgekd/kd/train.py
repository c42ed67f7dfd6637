"""The training loop every stage uses: streamed, seeded, resumable, on the chosen device and
precision, with progress, keeping the best epoch.

A checkpoint is written atomically after each epoch (model, optimizer, schedule, history, the
best epoch's weights); if the process is killed, the next run with the same checkpoint path
resumes after the last finished epoch and reaches the same result as an uninterrupted run
(epoch granularity: a killed epoch is redone from its start).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd import parallel as ranks
from edgekd.config import DataConfig, OptimizerConfig
from edgekd.config.data import Augment
from edgekd.console import EpochReport, progress
from edgekd.data import Part, Splits
from edgekd.data.augment import BatchMix
from edgekd.data.stream import as_input, eval_batches, train_loader
from edgekd.kd import batchnorm
from edgekd.kd.checkpoint import Bundle, optimizer_to, restore, resume_state, save, snapshot
from edgekd.kd.compute import CPU, Compute
from edgekd.schema import ConfigError


@dataclass
class Minibatch:
    """One training step's data, as a loss sees it."""

    x: torch.Tensor
    """Inputs, float32 (N, C, H, W) in [0, 1], on the training device (augmented, mixed)."""
    y: torch.Tensor
    """Labels: int64 (N,), or class probabilities (N, classes) after MixUp / CutMix / label
    smoothing (F.cross_entropy takes either)."""
    index: torch.Tensor | None
    """The samples' positions in the train split (int64 (N,), CPU), for looking up cached
    teacher outputs; None when the inputs are augmented (no stored output belongs to them)."""


# loss(model_logits, minibatch) -> scalar loss, or (loss, {name: scalar part})
LossFn = Callable[[torch.Tensor, Minibatch], torch.Tensor]
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
    patience: int | None = None
    """Stop after this many validations without a better accuracy (None: never)."""
    augment: Augment = Augment()
    """The training split's augmentation."""

    @classmethod
    def of(cls, cfg, data: DataConfig | None = None) -> Hyperparameters:
        """From a config with epochs, lr, batch_size, optimizer, val_every (and maybe
        weight_decay, patience, augment): TrainConfig, DistillStage, QuantizeStage. Its
        augment falls back to `data.augment`."""
        augment = getattr(cfg, "augment", None) or (data.augment if data else Augment())
        return cls(cfg.epochs, cfg.lr, cfg.batch_size, getattr(cfg, "weight_decay", 0.0),
                   cfg.optimizer, cfg.val_every, getattr(cfg, "patience", None), augment)


def set_seed(seed: int) -> None:
    """Seed torch's and numpy's global generators: call before building any model."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def default_mode(model: nn.Module, training: bool) -> None:
    """Switch an ordinary module between train and eval mode."""
    model.train(training)


def predict(model: nn.Module, data: np.ndarray | Part, batch_size: int = 512,
            mode: ModeFn = default_mode, device: torch.device | None = None) -> np.ndarray:
    """Logits (N, classes) float32 for every sample of an array (float32 NCHW in [0, 1]) or a
    split, in eval mode, without gradients, in fp32 on `device` (default: where the model
    is; the model returns there afterwards)."""
    mode(model, False)
    home = next(model.parameters(), torch.empty(0)).device
    dev = device or home
    model.to(dev)
    batches = ((torch.from_numpy(data[i:i + batch_size]), None, None)
               for i in range(0, len(data), batch_size)) if isinstance(data, np.ndarray) \
        else eval_batches(data, batch_size)
    out = []
    with torch.no_grad():
        for x, _y, _i in batches:
            out.append(model(as_input(x, dev)).float().cpu().numpy())
    model.to(home)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def validate(model: nn.Module, part: Part, compute: Compute, mode: ModeFn = default_mode,
             batch_size: int = 512, batches=None) -> float:
    """Top-1 accuracy on a split, in batches on the training device (one host sync);
    `batches` is a loader over `part` to reuse (default: a new one)."""
    mode(model, False)
    correct = torch.zeros((), dtype=torch.int64, device=compute.device)
    batches = batches or eval_batches(part, batch_size, pin=compute.pin_memory)
    with torch.no_grad():
        for x, y, _i in batches:
            logits = model(as_input(x, compute.device, compute.memory_format))
            correct += (logits.argmax(1) == y.to(compute.device)).sum()
    return int(correct) / max(len(part), 1)


def fit(model: nn.Module, loss_fn: LossFn, splits: Splits, settings: Hyperparameters,
        seed: int, checkpoint: Path, desc: str, mode: ModeFn = default_mode,
        extra: nn.Module | None = None, parallel: bool = False,
        compute: Compute = CPU) -> list[dict]:
    """Train `model` on `splits.train` in place, validating on `splits.val`; returns the
    per-epoch history.

    Each history entry has `epoch`, `loss` (the epoch's mean), `loss_<name>` for each named
    part, `val_accuracy` (None on epochs not validated), `images_per_s` (training samples / s
    of this process, not counting validation) and `kept`. When training ends, the model (and
    `extra`) hold the weights of the epoch with the best validation accuracy (the latest of
    equals), the one entry with `kept: true`, and sit on the CPU. With `settings.patience`,
    training stops after that many validations without a better accuracy (the last entry has
    `stopped_early: true`); a NaN or inf epoch loss stops it with a ConfigError naming the epoch.

    The train split streams through a DataLoader (edgekd.data.stream): shuffled per epoch
    from the seed, augmented per `settings.augment`, `splits.workers(...)` worker processes.
    `loss_fn(logits, Minibatch)` may return the loss alone or `(loss, parts)`, a dict of
    named scalar terms whose epoch means join the history; it runs under `compute`'s autocast
    (bf16 / fp16), fp16 with a gradient scaler. `extra` holds trainable modules the loss uses
    besides the model (hint adapters, a mutual-learning peer, an EMA copy): optimised with it
    (where they require gradients) and saved in its checkpoints. `parallel` trains
    data-parallel over the processes of a torchrun launch (edgekd.parallel): each global
    batch is split across the ranks, gradients are averaged, rank 0 writes the checkpoints.
    Loss values stay on the device during an epoch: one host sync per epoch, not per step.

    BatchNorm (default `mode` only: plain modules, not QAT graphs): running statistics decayed
    with a small momentum (torchvision's MobileNetV3: 0.01) can lag the weights so far that
    every epoch validates near chance, which would choose the kept epoch on noise. So each
    validation measures the model as it would ship: with its running statistics and with
    statistics re-estimated over the same seeded BN_SAMPLES training images
    (edgekd.kd.batchnorm.shipped), keeping the better; the entry's `bn_recalibrated` says
    which. The kept epoch's snapshot holds those statistics, so its `val_accuracy` is the
    returned model's. Training itself goes on from its own statistics (same weights, same
    resume). Cost per validated epoch: a forward pass over up to BN_SAMPLES images and a second
    validation (MNIST cnn student, 8,000 images: ~0.1 s CPU against ~0.9 s for its epoch)."""
    set_seed(seed)
    bundle = Bundle(model, extra)
    params = [p for p in bundle.parameters() if p.requires_grad]
    parallel = parallel and ranks.active()
    rank, world = (ranks.rank(), ranks.world_size()) if parallel else (0, 1)
    augmenting = settings.augment.random
    loader, sampler = train_loader(splits.train, settings.batch_size, seed,
                                   settings.augment if settings.augment.preset != "none" else None,
                                   splits.workers(augmenting), compute.pin_memory, rank, world)
    val_batches = eval_batches(splits.val, pin=compute.pin_memory, persistent=True)
    bn_batches = batchnorm.sample_batches(splits.train, seed, compute) \
        if mode is default_mode and batchnorm.layers(model) else None
    optimizer, scheduler = optimizer_and_schedule(params, settings, max(len(sampler), 1))
    scaler = compute.scaler()
    mixer = BatchMix(settings.augment, len(splits.classes), seed)
    history, start, best = [], 0, None
    if (state := resume_state(checkpoint)) is not None:
        restore(bundle, state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start, best = state["history"], state["epoch"], state.get("best")
    dev = compute.device
    bundle.to(dev, memory_format=compute.memory_format)
    optimizer_to(optimizer, dev)
    net = _data_parallel(bundle, dev) if parallel else bundle
    if compute.compile:
        net = torch.compile(net)
    step = _Step(net, loss_fn, optimizer, scheduler, scaler, settings.optimizer.clip_grad_norm,
                 compute, mixer, augmenting)
    per_epoch_images = len(splits.train) // world
    with progress(settings.epochs * per_epoch_images, desc if rank == 0 else "",
                  unit="img") as bar:
        bar.update(start * per_epoch_images)
        report = EpochReport(bar, desc if rank == 0 else "", settings.epochs)
        loop_began = time.perf_counter()
        for epoch in range(start, settings.epochs):
            if _patience_spent(history, settings.patience):
                break
            began = time.perf_counter()
            mode(model, True)
            if extra is not None:
                extra.train(True)
            sampler.set_epoch(epoch)
            sums = step.epoch(loader, epoch, bar)
            trained_s = time.perf_counter() - began
            if parallel:
                sums = _sync_epoch(bundle, sums)
            batches = sums.pop("#")
            if not math.isfinite(loss := sums[""] / batches):  # diverged: nothing more to learn
                raise ConfigError([f"{desc}: the loss became non-finite ({loss}) at epoch "
                                   f"{epoch + 1} of {settings.epochs}; try a lower lr (now "
                                   f"{settings.lr:g}), and check the data for NaN / inf values"])
            history.append({"epoch": epoch + 1, "loss": sums.pop("") / batches,
                            **{f"loss_{k}": v / batches for k, v in sums.items()},
                            "val_accuracy": None,
                            "images_per_s": per_epoch_images / trained_s})
            if (epoch + 1) % settings.val_every == 0 or epoch + 1 == settings.epochs:
                best = _judge(history[-1], best, bundle, splits.val, compute, mode,
                              val_batches, bn_batches)
            if _patience_spent(history, settings.patience):
                history[-1]["stopped_early"] = True
            if rank == 0:
                save(checkpoint, bundle, optimizer, scheduler, history, epoch + 1, best)
            if parallel:
                ranks.barrier()
            per_epoch = (time.perf_counter() - loop_began) / (epoch + 1 - start)
            report(history[-1], per_epoch * (settings.epochs - epoch - 1))
    bundle.to("cpu", memory_format=torch.contiguous_format)
    if best is not None:
        restore(bundle, best)
    for entry in history:
        entry["kept"] = best is not None and entry["epoch"] == best["epoch"]
    return history


def _judge(entry: dict, best: dict | None, bundle: Bundle, val: Part, compute: Compute,
           mode: ModeFn, val_batches, bn_batches) -> dict | None:
    """Validate the epoch's model as it would ship (BatchNorm re-estimated over `bn_batches`
    when given and not worse) into `entry`; returns the best epoch so far, with a snapshot of
    the weights that scored it (the latest of equals)."""
    def accuracy() -> float:
        return validate(bundle.model, val, compute, mode, batches=val_batches)

    judged = batchnorm.shipped(bundle.model, bn_batches, accuracy, compute) \
        if bn_batches is not None else contextlib.nullcontext((accuracy(), None))
    with judged as (acc, recalibrated):
        entry["val_accuracy"] = acc
        if recalibrated is not None:
            entry["bn_recalibrated"] = recalibrated
        if best is None or acc >= best["val_accuracy"]:
            best = {"epoch": entry["epoch"], "val_accuracy": acc, **snapshot(bundle)}
    return best


def throughput(history: list[dict]) -> float | None:
    """Median training images/s over a history's epochs (None when it has none)."""
    rates = [h["images_per_s"] for h in history if "images_per_s" in h]
    return round(statistics.median(rates), 1) if rates else None


def _patience_spent(history: list[dict], patience: int | None) -> bool:
    """True when `patience` validations have passed since the best accuracy was first
    reached (a tie is no improvement, as in Keras' and Lightning's early stopping)."""
    if patience is None:
        return False
    scores = [h["val_accuracy"] for h in history if h["val_accuracy"] is not None]
    return bool(scores) and len(scores) - 1 - scores.index(max(scores)) >= patience


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


class _Step:
    """One optimisation step, and an epoch of them, with the loss sums kept on the device."""

    def __init__(self, net, loss_fn, optimizer, scheduler, scaler, clip, compute: Compute,
                 mixer: BatchMix, augmenting: bool):
        self.net, self.loss_fn, self.optimizer, self.scheduler = net, loss_fn, optimizer, scheduler
        self.scaler, self.clip, self.compute, self.mixer = scaler, clip, compute, mixer
        self.augmenting = augmenting
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def epoch(self, loader, epoch: int, bar) -> dict[str, float]:
        """One pass over the loader; the sums of the loss and its named parts (and "#":
        batches)."""
        dev, sums = self.compute.device, {}
        for i, (xb, yb, index) in enumerate(loader):
            x = as_input(xb, dev, self.compute.memory_format)
            x, y = self.mixer(x, yb.to(dev, non_blocking=True), epoch, i)
            batch = Minibatch(x, y, None if self.augmenting else index)
            with self.compute.autocast():
                result = self.loss_fn(self.net(x), batch)
            loss, parts = result if isinstance(result, tuple) else (result, {})
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            for key, value in {"": loss, **parts}.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else value
                sums[key] = sums.get(key, 0.0) + value
            sums["#"] = sums.get("#", 0.0) + 1.0
            bar.update(len(xb))
        return {k: float(v) for k, v in sums.items()}  # the epoch's one host sync


def _data_parallel(bundle: nn.Module, dev: torch.device) -> nn.Module:
    """DDP over the bundle. Parameters of `extra` are used by the loss outside forward; DDP's
    gradient hooks still fire for them in the same backward, so they are averaged too."""
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (BatchNorm statistics) follow rank 0's at every forward, DDP's default.
    return DistributedDataParallel(bundle, device_ids=[dev] if dev.type == "cuda" else None)


def _sync_epoch(bundle: nn.Module, sums: dict[str, float]) -> dict[str, float]:
    """Average the epoch's loss sums over the ranks, and give every rank rank 0's buffers
    (BatchNorm running statistics) so validation sees the same model everywhere."""
    import torch.distributed as dist

    keys = sorted(sums)
    dev = next(bundle.parameters()).device
    total = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(total)
    for buffer in bundle.buffers():
        dist.broadcast(buffer, src=0)
    world = dist.get_world_size()
    return {k: v / world for k, v in zip(keys, total.tolist(), strict=True)}
