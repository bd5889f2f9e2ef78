"""Per-epoch batches: the order is a function of (seed, epoch) alone, a saved order is replayed exactly, and an
iterable's first batches are skipped when resuming mid-epoch."""

from __future__ import annotations

import torch

from instaaug.batching import TensorBatches, epoch_batches


def _batches() -> TensorBatches:
    x = torch.arange(10.0).view(10, 1, 1, 1)
    return TensorBatches(x, torch.arange(10), batch_size=4)


def _labels(iterator) -> list[list[int]]:
    return [y.tolist() for _, y in iterator]


def test_epoch_order_depends_on_seed_and_epoch_only():
    first, order = epoch_batches(_batches(), seed=3, epoch=1)
    again, same_order = epoch_batches(_batches(), seed=3, epoch=1)
    other, other_order = epoch_batches(_batches(), seed=3, epoch=2)
    assert _labels(first) == _labels(again) and torch.equal(order, same_order)
    assert not torch.equal(order, other_order)
    assert sorted(label for batch in _labels(other) for label in batch) == list(range(10))  # each input once


def test_a_saved_order_is_replayed_from_the_step_given():
    full, order = epoch_batches(_batches(), seed=0, epoch=0)
    rest, kept = epoch_batches(_batches(), seed=99, epoch=7, first_step=1, order=order)
    assert kept is order and _labels(rest) == _labels(full)[1:]


def test_an_iterable_is_replayed_past_its_first_batches():
    class Epochs:
        def __init__(self) -> None:
            self.sampler = self
            self.epoch = None

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            return iter([(torch.zeros(1), torch.tensor([i])) for i in range(4)])

    data = Epochs()
    iterator, order = epoch_batches(data, seed=0, epoch=5, first_step=2)
    assert data.epoch == 5 and order is None and _labels(iterator) == [[2], [3]]
