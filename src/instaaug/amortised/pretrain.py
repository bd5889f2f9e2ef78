"""Contrastive pre-training of an invariance-conditioned backbone over the corners of its invariance space.

Every step draws one corner (the same on every process, see ``CornerSampler``), builds the two views of that
corner only, and trains f(·, corner) with SimCLR's NT-Xent or MoCo-v2, through the corner's projection head.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..seeding import epoch_seed
from ..step import optimiser_step
from ..train import TensorBatches
from ..validation import check_int_fields, check_positive_int, trusted_inputs
from .backbones import ConditionedBackbone
from .objectives import CornerQueues, MomentumEncoder, ProjectionHeads, moco_loss, nt_xent
from .space import CornerSampler, InvarianceSpace, check_inputs

#: The contrastive objectives of pre-training (not augmentation methods, which ``METHODS`` names elsewhere).
CONTRASTIVE_OBJECTIVES = ("simclr", "moco")


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of ``pretrain``.

    Attributes:
        method: ``"simclr"`` (NT-Xent, 2N − 2 negatives) or ``"moco"`` (MoCo-v2: momentum encoder, a queue of
            negatives per corner).
        epochs: passes over the data.
        batch_size: images per step (each gives two views).
        lr: AdamW learning rate, cosine-decayed over all steps.
        weight_decay: AdamW's decoupled weight decay.
        temperature: of the contrastive softmax.
        proj_hidden, proj_dim: the projection heads' hidden and output widths.
        shared_head: one projection head for all corners instead of one per corner.
        queue_size: MoCo: negatives per corner.
        momentum: MoCo: the key encoder's EMA momentum.
        seed: the corner sequence, the views and the shuffling depend only on it.
        device: where to train.
        progress: show a progress bar (None: only on a terminal).
    """

    method: str = "simclr"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    proj_hidden: int = 128
    proj_dim: int = 64
    shared_head: bool = False
    queue_size: int = 1024
    momentum: float = 0.99
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in CONTRASTIVE_OBJECTIVES:
            raise ValueError(f"method must be one of {CONTRASTIVE_OBJECTIVES}, got {self.method!r}")
        for key in ("batch_size", "proj_hidden", "proj_dim", "queue_size"):
            check_positive_int(getattr(self, key), key)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be ≥ 2 (a contrastive batch needs negatives), got {self.batch_size}")
        check_int_fields(self, ("epochs",))
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class Pretrained:
    """The result of ``pretrain``: the trained heads (and queues for MoCo) and one metrics dict per epoch."""

    heads: ProjectionHeads
    queues: CornerQueues | None
    history: list[dict[str, Any]]


def pretrain(
    backbone: ConditionedBackbone,
    space: InvarianceSpace,
    x: torch.Tensor,
    config: PretrainConfig | None = None,
) -> Pretrained:
    """Pre-train ``backbone`` (in place) on inputs x (N, C, H, W) over ``space``'s corners.

    The loss of a step is the chosen objective on two views of the batch made by the step's corner's groups,
    with f conditioned on that corner. Returns the heads and the per-epoch history (``loss``, ``seconds``,
    ``corner_steps``: corner key → steps, ``corner_loss``: corner key → mean loss of its steps).
    """
    config = config or PretrainConfig()
    check_inputs(x, backbone.config.in_channels, name="pre-training inputs")
    if tuple(space.names) != backbone.groups:
        raise ValueError(f"the space's groups {list(space.names)} differ from the backbone's {list(backbone.groups)}")
    if space.needs_rgb and x.shape[1] != 3:
        raise ValueError(f"groups {[g.name for g in space.groups if g.needs_rgb]} need 3-channel RGB inputs")
    device = torch.device(config.device)
    corners = space.corners.to(device)
    num_corners = len(space.corners)
    heads = ProjectionHeads(backbone.feature_dim, num_corners, config.proj_hidden, config.proj_dim, config.shared_head)
    encoder = nn.ModuleDict({"backbone": backbone, "heads": heads}).to(device)
    key_encoder = MomentumEncoder(encoder, config.momentum) if config.method == "moco" else None
    queues = None
    if config.method == "moco":
        g = torch.Generator().manual_seed(config.seed)
        queues = CornerQueues(num_corners, config.proj_dim, config.queue_size, generator=g).to(device)
    batches = TensorBatches(x, torch.zeros(x.shape[0], dtype=torch.long), config.batch_size)
    total_steps = max(1, config.epochs * len(batches))
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total_steps)
    sampler = CornerSampler(space, config.seed)
    view_gen = torch.Generator()
    history: list[dict[str, Any]] = []
    step = 0
    encoder.train()
    for epoch in range(config.epochs):
        batches.generator.manual_seed(epoch_seed(config.seed, epoch))
        view_gen.manual_seed(epoch_seed(config.seed + 1, epoch))
        corner_loss = torch.zeros(num_corners, device=device)
        counts: Counter[str] = Counter()
        started = time.perf_counter()
        bar = tqdm(
            batches,
            desc=f"pre-train {epoch + 1}/{config.epochs}",
            disable=None if config.progress is None else not config.progress,
            leave=False,
        )
        for xb, _ in bar:
            if xb.shape[0] < 2:  # a last batch of one image has no negatives
                continue
            corner = sampler.corner(step)
            xb = xb.to(device, non_blocking=True)
            v1, v2 = sampler.views(xb, corner, view_gen)
            i = corners[corner]
            with trusted_inputs():
                if key_encoder is None:
                    z = heads(backbone.features(torch.cat((v1, v2)), i), corner)
                    loss = nt_xent(*z.chunk(2), config.temperature)
                else:
                    q = heads(backbone.features(v1, i), corner)
                    with torch.no_grad():
                        key = key_encoder.encoder
                        k = key["heads"](key["backbone"].features(v2, i), corner)
                    loss = moco_loss(q, k, queues.negatives(corner), config.temperature)
            optimiser_step(loss, optimiser)
            scheduler.step()
            if key_encoder is not None:
                key_encoder.update(encoder)
                queues.enqueue(corner, torch.nn.functional.normalize(k, dim=1))
            corner_loss[corner] += loss.detach()
            counts[space.corner_key(corner)] += 1
            step += 1
        bar.close()
        steps = sum(counts.values())
        losses = corner_loss.cpu()
        record = {
            "epoch": epoch + 1,
            "loss": float(losses.sum()) / max(1, steps),
            "seconds": round(time.perf_counter() - started, 3),
            "corner_steps": {key: counts[key] for key in space.corner_keys()},
            "corner_loss": {
                key: float(losses[c]) / counts[key] for c, key in enumerate(space.corner_keys()) if counts[key]
            },
        }
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"the pre-training loss became non-finite in epoch {epoch + 1}")
        history.append(record)
    backbone.eval()
    return Pretrained(heads.eval(), queues, history)
