"""Derived seeds: one formula for every loop, so that runs are reproducible from (seed, epoch or step, rank)."""

from __future__ import annotations


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch (or step) ``epoch`` of a run seeded ``seed``, on process ``rank``, in [0, 2^63).

    Rank 0 keeps the single-process seed; other ranks get unrelated streams (a 64-bit odd multiplier)."""
    return (seed * 1_000_003 + epoch + rank * 0x9E3779B97F4A7C15) % (2**63)
