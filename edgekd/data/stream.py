"""Splits as torch DataLoaders: the training stream (shuffled per epoch, sharded over ranks,
augmented) and ordered evaluation batches.

A batch is `(x, y, index)`: x (n, C, H, W) uint8 or float32 as stored (convert with
`edgekd.data.stream.as_input` on the device), y int64 (n,), index int64 (n,), the samples'
positions in their split. Workers (`num_workers`) read and augment in parallel with pinned
memory on CUDA; the host holds batch x (workers x prefetch) samples, never the split.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekd.config.data import Augment
from edgekd.data.augment import sample_seed, sample_transform
from edgekd.data.loading import Part

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Samples(torch.utils.data.Dataset):
    """Positions (eval) or (epoch, position) pairs (training) -> one collated batch."""

    def __init__(self, part: Part, augment: Augment | None = None, seed: int = 0):
        self.part, self.seed = part, seed
        self.transform = sample_transform(augment, part.store.shape) if augment else None

    def __len__(self) -> int:
        return len(self.part)

    def __getitems__(self, keys: list) -> Batch:
        epoch = keys[0][0] if keys and isinstance(keys[0], tuple) else 0
        positions = np.array([k[1] if isinstance(k, tuple) else k for k in keys], np.int64)
        x = torch.from_numpy(self.part.read(positions))
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                out = []
                for image, position in zip(x, positions.tolist(), strict=True):
                    torch.manual_seed(sample_seed(self.seed, epoch, position))
                    out.append(self.transform(image))
            x = torch.stack(out)
        return x, torch.from_numpy(self.part.y[positions]), torch.from_numpy(positions)


def _as_is(batch: Batch) -> Batch:
    return batch


class EpochBatches(torch.utils.data.Sampler):
    """This rank's share of each global batch of one epoch, as (epoch, position) lists.

    The order is a permutation seeded by (seed, epoch), the same in every process; each
    global batch is cut into `world` near-equal shares, so one step of N ranks sees the same
    samples as one step of one process. A last batch smaller than `world` is dropped on every
    rank. `set_epoch` picks the epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world else 0)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(
            self.seed + self.epoch)).tolist()
        for i in range(0, self.n, self.batch_size):
            chunk = order[i:i + self.batch_size]
            if len(chunk) < self.world:
                continue
            share = np.array_split(np.array(chunk), self.world)[self.rank]
            yield [(self.epoch, int(p)) for p in share]


def train_loader(part: Part, batch_size: int, seed: int, augment: Augment | None,
                 workers: int, pin: bool, rank: int = 0, world: int = 1):
    """The training DataLoader over `part` and its EpochBatches sampler (call `set_epoch`)."""
    sampler = EpochBatches(len(part), batch_size, seed, rank, world)
    # Its own generator: worker seeds never draw from (and shift) the global RNG.
    loader = torch.utils.data.DataLoader(
        _Samples(part, augment, seed), batch_sampler=sampler, collate_fn=_as_is,
        num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def eval_batches(part: Part, batch_size: int = 512, pin: bool = False,
                 persistent: bool = False):
    """Ordered, unaugmented batches of `part` (every sample once), read by
    `part.workers()` worker processes (kept between passes with `persistent`)."""
    positions = list(range(len(part)))
    batches = [positions[i:i + batch_size] for i in range(0, len(part), batch_size)]
    workers = part.workers()
    return torch.utils.data.DataLoader(_Samples(part), batch_sampler=batches,
                                       collate_fn=_as_is, num_workers=workers,
                                       pin_memory=pin, generator=torch.Generator(),
                                       persistent_workers=persistent and workers > 0)


def as_input(x: torch.Tensor, device: torch.device,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A stored batch on `device` as a model input: float32 in [0, 1]."""
    x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=memory_format)
