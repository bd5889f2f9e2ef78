"""Learning-rate schedules of ``train``: f's cosine decay over all epochs, φ's optional freeze, warm-up and decay
over the joint epochs. Both step once per training step (φ's only in joint epochs)."""

from __future__ import annotations

import math
from typing import Any

import torch

AUG_LR_SCHEDULES = ("constant", "cosine")


def warmup_factor(step: int, warmup: int, total: int, cosine: bool, frozen: int = 0) -> float:
    """φ's learning-rate factor at joint step ``step``: 0 for the first ``frozen`` steps, then linear from 1/warmup
    to 1 over ``warmup`` steps, then 1 (constant) or a cosine decay to 0 at ``total``."""
    if step < frozen:
        return 0.0
    step, total = step - frozen, total - frozen
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def make_schedulers(
    optimisers: dict[str, torch.optim.Optimizer], config: Any, steps_per_epoch: int | None
) -> tuple[Any, Any]:
    """(f's scheduler, φ's scheduler) for a ``TrainConfig``; None where there is nothing to schedule (no such
    optimiser, or batches of unknown number)."""
    if not steps_per_epoch:
        return None, None
    total_epochs = config.pretrain_epochs + config.epochs
    scheduler = None
    if "f" in optimisers:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimisers["f"], T_max=max(1, total_epochs * steps_per_epoch)
        )
    if "phi" not in optimisers:
        return scheduler, None
    joint_steps = config.epochs * steps_per_epoch
    cosine = config.aug_lr_schedule == "cosine"
    if config.aug_lr_warmup_epochs or config.aug_frozen_epochs:
        frozen = min(config.aug_frozen_epochs * steps_per_epoch, joint_steps)
        warmup = min(config.aug_lr_warmup_epochs * steps_per_epoch, joint_steps - frozen)
        return scheduler, torch.optim.lr_scheduler.LambdaLR(
            optimisers["phi"], lambda step: warmup_factor(step, warmup, joint_steps, cosine, frozen)
        )
    if cosine:
        return scheduler, torch.optim.lr_scheduler.CosineAnnealingLR(optimisers["phi"], T_max=max(1, joint_steps))
    return scheduler, None
