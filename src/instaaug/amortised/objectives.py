"""Contrastive pre-training objectives over invariance corners: SimCLR's NT-Xent and MoCo-v2.

Small, independent pieces that compose in one's own loop: projection heads (shared, or one per corner), the
NT-Xent loss (``instaaug.contrastive.nt_xent``, shared with contrastive InstaAug), MoCo's per-corner negative
queues and its momentum encoder.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..contrastive import nt_xent

__all__ = ["CornerQueues", "MomentumEncoder", "ProjectionHeads", "moco_loss", "nt_xent"]


class ProjectionHeads(nn.Module):
    """MLP projection heads g (D → hidden → out): one shared by every corner, or one per corner.

    Args:
        in_dim: feature size D.
        num_corners: K, the trained corners.
        hidden: hidden width.
        out_dim: projection size d.
        shared: one head for all corners (True) or one per corner (False, the paper's MoCo setting).
    """

    def __init__(self, in_dim: int, num_corners: int, hidden: int = 128, out_dim: int = 64, shared: bool = False):
        super().__init__()
        self.shared = shared
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            for _ in range(1 if shared else num_corners)
        )

    def forward(self, h: torch.Tensor, corner: int) -> torch.Tensor:
        """Features h (N, D) of corner ``corner`` → projections (N, d)."""
        return self.heads[0 if self.shared else corner](h)


class CornerQueues(nn.Module):
    """MoCo's negative keys, one ring-buffer queue per corner: ``queues`` (K, size, d), ``pointers`` (K,).

    Keys of a corner only ever meet queries of the same corner, so a corner's negatives are always features
    produced under its own invariance (and its own projection head).
    """

    queues: torch.Tensor
    pointers: torch.Tensor

    def __init__(self, num_corners: int, dim: int, size: int = 1024, generator: torch.Generator | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"the queue size must be ≥ 1, got {size}")
        self.register_buffer("queues", F.normalize(torch.randn(num_corners, size, dim, generator=generator), dim=-1))
        self.register_buffer("pointers", torch.zeros(num_corners, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queues.shape[1]

    @torch.no_grad()
    def enqueue(self, corner: int, keys: torch.Tensor) -> None:
        """Write keys (N, d) into corner ``corner``'s queue after the newest entries, overwriting the oldest
        (wrapping around; of more than ``size`` keys only the last ``size`` are kept)."""
        keys = keys.detach()[-self.size :]
        slots = (self.pointers[corner] + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.queues[corner, slots] = keys.to(self.queues.dtype)
        self.pointers[corner] = (self.pointers[corner] + keys.shape[0]) % self.size

    def negatives(self, corner: int) -> torch.Tensor:
        """Corner ``corner``'s queued keys (size, d)."""
        return self.queues[corner]


def moco_loss(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of queries q (N, d) against their keys k (N, d) (positives, no gradient) and negatives (Q, d).

    All vectors are L2-normalised here. Returns a scalar.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(1, keepdim=True)
    negative = q @ F.normalize(negatives.detach(), dim=1).T
    logits = torch.cat((positive, negative), 1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MomentumEncoder(nn.Module):
    """A frozen copy of an encoder (backbone and heads) that follows it by an exponential moving average.

    Args:
        encoder: the module to copy (and later follow).
        momentum: m in θ_key ← m·θ_key + (1 − m)·θ_query.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.99) -> None:
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.momentum = momentum
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        """Move every parameter (and copy every buffer) towards ``encoder``'s."""
        mine = list(self.encoder.parameters())
        theirs = [p.detach() for p in encoder.parameters()]
        torch._foreach_lerp_(mine, theirs, 1 - self.momentum)
        for b, src in zip(self.encoder.buffers(), encoder.buffers(), strict=True):
            b.copy_(src)
