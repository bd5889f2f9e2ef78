"""Contrastive (self-supervised) learning with views from any augmenter: SimCLR's NT-Xent, written once.

The views of an input are positives of each other and every other view in the (global) batch is a negative.
Views are identified by *instance ids*: ``aug(x, n_copies=2)`` gives rows b·2 and b·2 + 1 for input b, and
``out.repeat(ids)`` gives each view its input's id, so ``nt_xent_per_view(z, out.repeat(ids))`` is SimCLR's loss
per anchor view. ``instaaug.train`` runs SimCLR (with any augmenter, learned or random) when it is given instance
ids as labels and ``InstanceContrast`` as the task loss: its ``hits`` report how often the nearest other view is
a positive (``train_positive_top1``).

Under ``torchrun`` the projections of every process are gathered (``all_gather_with_grad``), so each anchor meets
the negatives of the whole global batch and the update equals one process's on that batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_gather_with_grad, rank


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    return float(temperature)


def _similarities(
    z: torch.Tensor, ids: torch.Tensor, temperature: float, gather: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax over all other views (N, M) of each local anchor, and the positives mask (N, M).

    M = N in one process, W·N when gathered across W processes (this process's views are rows rank·N … of the
    gathered set, so an anchor's own column is excluded at that offset).
    """
    if z.dim() != 2 or ids.shape != z.shape[:1]:
        raise ValueError(f"z must be (N, d) and ids (N,), got {tuple(z.shape)} and {tuple(ids.shape)}")
    z = F.normalize(z.float(), dim=1)
    keys, key_ids = (all_gather_with_grad(z), all_gather_with_grad(ids)) if gather else (z, ids)
    n, m = z.shape[0], keys.shape[0]
    # This process's rows sit at offset rank·N among the gathered keys (0 in one process).
    offset = rank() * n if m != n else 0
    own = torch.zeros(n, m, dtype=torch.bool, device=z.device)
    own[torch.arange(n, device=z.device), torch.arange(n, device=z.device) + offset] = True
    logits = (z @ keys.T / temperature).masked_fill(own, float("-inf"))
    positives = (ids[:, None] == key_ids[None, :]) & ~own
    return logits.log_softmax(dim=1), positives


def nt_xent_per_view(
    z: torch.Tensor, ids: torch.Tensor, temperature: float = 0.2, *, gather: bool = True
) -> torch.Tensor:
    """SimCLR's NT-Xent loss of every anchor view: (N,).

    Args:
        z: projections (N, d) of N views (normalised here).
        ids: (N,) integer instance ids: views with the same id are positives of each other, every other view a
            negative. With two views per id this is SimCLR's loss; with more, each anchor's loss is the mean over
            its positives of −log softmax (the multi-positive form). An anchor without a positive gets NaN.
        temperature: τ > 0 of the softmax.
        gather: under ``torch.distributed``, use every process's views as keys (differentiably).

    Returns:
        (N,) per-anchor losses −mean_{p ∈ P(a)} log [exp(s_ap/τ) / Σ_{k ≠ a} exp(s_ak/τ)], s the cosine similarity.
    """
    temperature = _check_temperature(temperature)
    log_prob, positives = _similarities(z, ids, temperature, gather)
    return -(log_prob.masked_fill(~positives, 0.0).sum(1)) / positives.sum(1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, *, gather: bool = True) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy of two views' projections z1, z2 (N, d): a scalar.

    Each of the 2N projections has one positive (the other view of its image) and 2N − 2 negatives (every other
    projection but itself; under ``torch.distributed`` with ``gather``, the other processes' too); the loss is the
    mean over all 2N anchors, so gradients flow through both views.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must both be (N, d) with N ≥ 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    ids = torch.arange(z1.shape[0], device=z1.device).repeat(2)
    if gather:
        # Distinct ids on every process: this process's inputs are numbered after the previous processes'.
        ids = ids + rank() * z1.shape[0]
    return nt_xent_per_view(torch.cat((z1, z2)), ids, temperature, gather=gather).mean()


@torch.no_grad()
def positive_top1(z: torch.Tensor, ids: torch.Tensor, *, gather: bool = True) -> torch.Tensor:
    """How many of the N anchor views (z (N, d), ids (N,)) have a positive as their most similar other view:
    a 0-d tensor on z's device (SimCLR's "contrastive accuracy"; no host synchronisation)."""
    log_prob, positives = _similarities(z, ids, 1.0, gather)
    return positives.gather(1, log_prob.argmax(1, keepdim=True)).sum()


class InstanceContrast(nn.Module):
    """NT-Xent per view as a task loss for ``instaaug.train`` / ``train_step``: ``(z (N, d), ids (N,)) → (N,)``.

    Train with instance ids as the labels (``torch.arange(len(x))``) and an augmenter that draws ≥ 2 views per
    input (``n_copies=2``); the reported score is ``positive_top1`` per view.

    Args:
        temperature: the softmax temperature τ.
        gather: gather the negatives of every process under ``torch.distributed``.
    """

    metric = "positive_top1"

    def __init__(self, temperature: float = 0.2, gather: bool = True) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.gather = bool(gather)

    def forward(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return nt_xent_per_view(z, ids, self.temperature, gather=self.gather)

    def hits(self, z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(anchors whose most similar other view is a positive, 0-d; anchors N)."""
        return positive_top1(z, ids, gather=self.gather), z.shape[0]


class ProjectedEncoder(nn.Module):
    """An encoder followed by SimCLR's projection head: ``forward`` gives projections, ``features`` the encoder's.

    Args:
        encoder: maps images (N, C, H, W) to features (N, D).
        feature_dim: D.
        hidden: the projection MLP's hidden width.
        out_dim: the projection size d.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) → features (N, D) (what a linear probe reads)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) → projections (N, d) (what NT-Xent compares)."""
        return self.projection(self.encoder(x))
