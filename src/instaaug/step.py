"""One training step, shared by ``train()`` and ``instaaug bench`` (so the benchmark times the step users run).

A step augments a batch (φ → distribution → views; masks move with the views for dense tasks), runs the classifier
once forward and once backward, evaluates the objective (which also updates the entropy controller), and steps the
optimisers. It reads nothing back to the host: its outputs stay on the device until the caller logs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .segmentation import segmentation_loss
from .targets import IGNORE_INDEX, Targets, ViewTargets


@dataclass(frozen=True)
class StepOutput:
    """What a step leaves for logging (all detached, on the device).

    Attributes:
        metrics: the objective's parts (``task_loss``, ``entropy``, ``lam``, ``surrogate``; ``task_loss`` alone in
            pre-training), each a 0-d tensor.
        correct: 0-d tensor, the number of views classified right (for masks: the sum over views of each view's
            fraction of labelled pixels predicted right; for regression targets: the sum over views of the mean
            absolute error).
        views: the number of views N.
        finite: 0-d bool tensor, whether the loss and φ's entropies were finite.
        metric: what ``correct / views`` is: ``accuracy``, ``mae`` for regression targets, or the task loss's own
            ``metric`` (e.g. ``positive_top1``).
    """

    metrics: dict[str, torch.Tensor]
    correct: torch.Tensor
    views: int
    finite: torch.Tensor
    metric: str = "accuracy"


def cross_entropy_per_view(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unreduced cross-entropy (N,) of logits (N, K) against labels (N,)."""
    return F.cross_entropy(logits, y, reduction="none")


def _errors(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """outputs (N, D) − targets (N, D) (or (N,) for D = 1), in float32; a shape mismatch raises (no broadcasting)."""
    out, target = outputs.float().flatten(1), y.float().reshape(y.shape[0], -1)
    if out.shape != target.shape:
        raise ValueError(f"the model's outputs {tuple(outputs.shape)} do not match the targets {tuple(y.shape)}")
    return out - target


def squared_error_per_view(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error (N,) per view of outputs (N, D) against real targets (N, D) or (N,) (regression)."""
    return _errors(outputs, y).square().mean(1)


def absolute_error_per_view(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (N,) per view of outputs (N, D) against real targets (N, D) or (N,) (regression)."""
    return _errors(outputs, y).abs().mean(1)


#: f's optimisers: ``adamw`` (decoupled weight decay) or ``sgd`` (with momentum; the papers' full-scale recipes).
OPTIMIZERS = ("adamw", "sgd")


def make_optimisers(
    model: nn.Module,
    aug: nn.Module,
    lr: float = 3e-3,
    aug_lr: float = 3e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    momentum: float = 0.9,
) -> dict[str, torch.optim.Optimizer]:
    """The optimisers of a run: ``f`` (``optimizer`` over the classifier's trainable parameters: AdamW, or SGD
    with ``momentum`` and L2 ``weight_decay``) and ``phi`` (Adam over φ's), each only if there is something to
    train."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    optimisers: dict[str, torch.optim.Optimizer] = {}
    f_params = [p for p in model.parameters() if p.requires_grad]
    phi_params = [p for p in aug.parameters() if p.requires_grad]
    if f_params and optimizer == "sgd":
        optimisers["f"] = torch.optim.SGD(f_params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif f_params:
        optimisers["f"] = torch.optim.AdamW(f_params, lr=lr, weight_decay=weight_decay)
    if phi_params:
        optimisers["phi"] = torch.optim.Adam(phi_params, lr=aug_lr)
    return optimisers


def _hits(logits: torch.Tensor, targets: torch.Tensor | ViewTargets) -> tuple[torch.Tensor, int]:
    """(correct predictions, 0-d on the device; views): argmax hits for labels (N,), or per view the fraction of
    labelled pixels predicted right for masks, or the summed mean absolute errors for real targets (N, D)."""
    if isinstance(targets, torch.Tensor) and targets.is_floating_point():
        return absolute_error_per_view(logits, targets).sum(), targets.shape[0]
    if isinstance(targets, torch.Tensor) and targets.dim() == 1:
        return (logits.argmax(-1) == targets).sum(), targets.shape[0]
    if isinstance(targets, ViewTargets):
        masks, ignore = targets.masks, targets.ignore_index
    else:
        masks, ignore = targets, IGNORE_INDEX
    assert masks is not None
    keep = masks != ignore
    right = ((logits.argmax(1, keepdim=True) == masks) & keep).sum(dim=(1, 2, 3))
    return (right / keep.sum(dim=(1, 2, 3)).clamp_min(1)).sum(), masks.shape[0]


@dataclass(frozen=True)
class StepLoss:
    """The forward half of a training step (``step_loss``): everything up to the loss, nothing read back.

    Attributes:
        loss: 0-d, what the step differentiates.
        metrics: the objective's parts (see ``StepOutput.metrics``), detached.
        logits: (N, K) or (N, K, H, W), the classifier's outputs on the N views.
        targets: the views' targets (labels (N,), ``ViewTargets`` for masks, real targets (N, D)).
        finite: 0-d bool tensor, whether the loss and φ's entropies were finite.
        task_loss: the per-view loss used.
        regression: whether the targets are real values.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    logits: torch.Tensor
    targets: Any
    finite: torch.Tensor
    task_loss: Callable[[torch.Tensor, Any], torch.Tensor]
    regression: bool


def step_loss(
    model: nn.Module,
    aug: nn.Module,
    objective: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task_loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    pretraining: bool = False,
    amp: bool = False,
    checks: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepLoss:
    """The forward half of ``train_step`` (augment, one classifier forward, the objective) on images x
    (B, C, H, W) and targets y; the arguments are ``train_step``'s. It makes no host synchronisation and traces
    as one graph (``torch.compile(..., fullgraph=True)``); the backward pass and the optimisers stay outside."""
    dense = y.dim() == 4
    regression = y.is_floating_point()
    default_loss = squared_error_per_view if regression else cross_entropy_per_view
    task_loss = task_loss or (segmentation_loss if dense else default_loss)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        if pretraining:
            logits = model(x)
            loss = task_loss(logits, y).mean()
            metrics = {"task_loss": loss.detach()}
            targets: Any = y
            finite = torch.isfinite(loss.detach())
        else:
            with checks():
                # Real targets are not class labels: a class-conditional φ cannot take them.
                out = aug(x, targets=Targets(masks=y)) if dense else aug(x, None if regression else y)
            logits = model(out.images)
            targets = out.targets if dense else out.repeat(y)
            terms = objective(task_loss(logits, targets), out)
            loss = terms.loss
            metrics = terms.metrics()
            # φ's output: its entropy per input; its sampled parameters reach the loss via the views.
            finite = torch.isfinite(loss.detach()) & torch.isfinite(out.entropy.detach()).all()
    return StepLoss(loss, metrics, logits, targets, finite, task_loss, regression)


def optimiser_step(
    loss: torch.Tensor,
    optimisers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    max_grad_norm: float = 0.0,
    clear: Sequence[torch.optim.Optimizer] | None = None,
) -> None:
    """The gradient half of every training loop: clear the gradients, back-propagate ``loss`` (0-d), clip, step.

    Shared by ``train_step``, the amortised pre-training and the invariance probe, so clipping and gradient
    clearing behave the same everywhere. Reads nothing back to the host.

    Args:
        loss: the scalar to minimise.
        optimisers: the optimisers to step, in order.
        max_grad_norm: clip the gradients of every stepped parameter to this total norm (0: no clipping).
        clear: the optimisers whose gradients are cleared first (default: ``optimisers``).
    """
    stepping = [optimisers] if isinstance(optimisers, torch.optim.Optimizer) else list(optimisers)
    for opt in stepping if clear is None else clear:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        params = [p for opt in stepping for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    for opt in stepping:
        opt.step()


def train_step(
    model: nn.Module,
    aug: nn.Module,
    objective: nn.Module,
    optimisers: dict[str, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task_loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    pretraining: bool = False,
    amp: bool = False,
    max_grad_norm: float = 0.0,
    checks: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepOutput:
    """One optimisation step of f (``model``) and φ (``aug``) on a batch.

    Args:
        model: maps images (N, C, H, W) to logits (N, K), or to dense logits (N, K, H, W) for masks.
        aug: the augmenter (or its DDP wrapper).
        objective: ``InstaAugObjective``, ``AugerinoObjective`` or ``TaskObjective``.
        optimisers: from ``make_optimisers``; in pre-training only ``f`` steps.
        x: images (B, C, H, W) in [0, 1]; y: labels (B,), integer masks (B, 1, H, W) or real regression targets
            (B, D) (float).
        task_loss: per-view loss ``(logits, targets) → (N,)``; cross-entropy for labels, ``segmentation_loss``
            (with the views' ``ViewTargets``) for masks, the squared error for real targets. A task loss with a
            ``hits(outputs, targets) → (correct, views)`` method and a ``metric`` name is scored by it instead
            (``instaaug.contrastive.InstanceContrast``: self-supervised, with instance ids as the labels).
        pretraining: train f alone on the unaugmented images.
        amp: autocast the forward passes to bfloat16.
        max_grad_norm: clip the gradients of every optimised parameter to this total norm (0: no clipping).
        checks: a context for the augmenter call (``validation.trusted_inputs`` once the data were validated).
    """
    forward = step_loss(
        model, aug, objective, x, y, task_loss=task_loss, pretraining=pretraining, amp=amp, checks=checks
    )
    # In pre-training φ's gradients are cleared but φ does not step.
    stepping = [optimisers["f"]] if pretraining else list(optimisers.values())
    optimiser_step(forward.loss, stepping, max_grad_norm=max_grad_norm, clear=list(optimisers.values()))
    logits, targets = forward.logits.detach(), forward.targets
    hits = getattr(forward.task_loss, "hits", None)
    if hits is not None:  # a task loss with its own score (e.g. ``InstanceContrast``: positive retrieval)
        correct, views = hits(logits, targets)
        return StepOutput(forward.metrics, correct, views, forward.finite, forward.task_loss.metric)  # type: ignore[attr-defined]
    correct, views = _hits(logits, targets)
    return StepOutput(forward.metrics, correct, views, forward.finite, "mae" if forward.regression else "accuracy")
