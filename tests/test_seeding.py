"""Derived seeds (``instaaug.seeding.epoch_seed``): reproducible, distinct per epoch and per process."""

from __future__ import annotations

from instaaug.seeding import epoch_seed


def test_epoch_seeds_are_reproducible_distinct_and_in_range():
    assert epoch_seed(7, 3) == epoch_seed(7, 3, rank=0) == 7 * 1_000_003 + 3  # rank 0: the single-process seed
    seeds = {epoch_seed(s, e, r) for s in range(4) for e in range(50) for r in range(4)}
    assert len(seeds) == 4 * 50 * 4  # no two (seed, epoch, rank) share a stream
    assert all(0 <= v < 2**63 for v in seeds)
    # other ranks are far from rank 0's sequence, not shifted copies of it
    assert {epoch_seed(0, e, 1) for e in range(1000)}.isdisjoint({epoch_seed(0, e, 0) for e in range(1000)})
    assert 0 <= epoch_seed(2**62, 2**62, 3) < 2**63  # huge inputs wrap into range
