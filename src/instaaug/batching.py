"""Mini-batches for ``train``: in-memory tensors shuffled per epoch and sharded over processes, or any re-iterable
of batches, each epoch's order a function of (seed, epoch) alone so that a resumed run replays it exactly."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

import torch

from .seeding import epoch_seed


class TensorBatches:
    """Mini-batches of in-memory tensors (x, y), shuffled with a ``torch.Generator`` each time it is iterated.

    Distributed (``world_size`` > 1): every process draws the same order (seed ``generator`` alike on all ranks),
    cuts it into the same global batches of ``batch_size`` inputs and takes every ``world_size``-th input of each
    from position ``rank`` on, like ``DistributedSampler``. The shards of a global batch together are exactly the
    batch a single process would use; a last, partial batch is padded by wrapping around the order to a multiple
    of ``world_size``, so every rank takes the same number of steps with equal shares.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size (the global batch) must be a multiple of the number of processes, got {batch_size} "
                f"over {world_size} processes"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def permutation(self) -> torch.Tensor:
        """The order (N,) of one epoch: a permutation drawn from ``generator``, or 0 … N-1 without shuffling."""
        n = self.x.shape[0]
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def shard(self, order: torch.Tensor, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches (x (b, C, H, W), y (b,)) of the global batches of ``order`` from batch ``start`` on."""
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world_size > 1:
                pad = -idx.shape[0] % self.world_size
                if pad:
                    idx = torch.cat([idx, order[torch.arange(pad) % order.shape[0]]])
                idx = idx[self.rank :: self.world_size]
            yield self.x[idx], self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.shard(self.permutation())


def epoch_batches(
    batches: Iterable, seed: int, epoch: int, first_step: int = 0, order: torch.Tensor | None = None
) -> tuple[Iterator, torch.Tensor | None]:
    """The batches of ``epoch`` from step ``first_step`` on, and the epoch's data order (``TensorBatches`` only).

    ``TensorBatches`` draw their order from (seed, epoch), or take ``order`` (saved with a mid-epoch checkpoint).
    Any other iterable is iterated afresh (a sampler's ``set_epoch`` is called first) and its first ``first_step``
    batches are drawn and dropped now, before the caller restores the checkpoint's RNG state, so that it draws from
    the global RNG exactly as it did in the interrupted run.
    """
    if isinstance(batches, TensorBatches):
        if order is None:
            batches.generator.manual_seed(epoch_seed(seed, epoch))
            order = batches.permutation()
        return batches.shard(order, first_step), order
    set_epoch = getattr(getattr(batches, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    iterator = iter(batches)
    for _ in itertools.islice(iterator, first_step):
        pass
    return iterator, None
