"""The training loop: f and φ trained together (or φ alone against a frozen f), one classifier pass per step.

A run is seeded per epoch (the shuffling and the augmentation samples of epoch e depend only on the seed and
e), writes one JSON line of metrics per epoch and an atomic checkpoint after every epoch, and can resume from
that checkpoint with the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import Augmenter
from .io import load_checkpoint, save_checkpoint
from .validation import check_images, check_labels, check_positive_int, trusted_inputs

CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Settings of ``train``.

    Attributes:
        epochs: joint training epochs (after ``pretrain_epochs``).
        pretrain_epochs: epochs of f alone on unaugmented images first (the paper's recipe for crops).
        batch_size: inputs per step (each gives ``aug.n_copies`` views).
        lr: f's learning rate (Adam, cosine decay over all epochs).
        aug_lr: φ's learning rate (Adam, constant).
        weight_decay: f's decoupled weight decay (AdamW).
        seed: the run's seed.
        device: where to train.
        progress: show a progress bar (None: only when attached to a terminal).
    """

    epochs: int = 10
    pretrain_epochs: int = 0
    batch_size: int = 64
    lr: float = 3e-3
    aug_lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.batch_size, "batch_size")
        for key in ("epochs", "pretrain_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an int ≥ 0, got {value!r}")
        for key in ("lr", "aug_lr", "weight_decay"):
            if not (isinstance(getattr(self, key), int | float) and getattr(self, key) >= 0):
                raise ValueError(f"{key} must be a number ≥ 0, got {getattr(self, key)!r}")


class TensorBatches:
    """Mini-batches of in-memory tensors (x, y), shuffled with a ``torch.Generator`` each time it is iterated."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for idx in order.split(self.batch_size):
            yield self.x[idx], self.y[idx]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def train(
    model: nn.Module,
    aug: Augmenter,
    objective: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    evaluate_fn: Callable[[int], dict[str, float]] | None = None,
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Train f (``model``) and φ (``aug``) with ``objective``; returns one metrics dict per epoch.

    Args:
        model: maps images (N, C, H, W) to logits (N, K). Freeze it (``requires_grad_(False)``) to train φ alone
            against a fixed classifier; it then stays in eval mode (BatchNorm statistics unchanged).
        aug: the augmenter producing the views (``InstaAug``, ``RandomAugment``, ``NoAugment``, ...).
        objective: ``InstaAugObjective``, ``AugerinoObjective`` or ``TaskObjective``.
        data: training tensors (x (N, C, H, W) in [0, 1], y (N,) integer labels) or a re-iterable of batches.
        config: a ``TrainConfig``.
        out_dir: where to write ``metrics.jsonl`` and ``checkpoint.safetensors`` (nothing written if None).
        resume: continue from ``out_dir``'s checkpoint if there is one.
        evaluate_fn: called after each epoch with its index; its metrics join that epoch's line (use training
            or validation data there, never the test set, if they steer anything).
        task_loss: per-view loss ``(logits (N, K), y (N,)) → (N,)``; cross-entropy by default.
    """
    config = config or TrainConfig()
    task_loss = task_loss or (lambda logits, y: F.cross_entropy(logits, y, reduction="none"))
    device = torch.device(config.device)
    if isinstance(data, tuple):
        x, y = data
        check_images(x, name="training images")
        check_labels(y, x.shape[0])
        batches: Iterable = TensorBatches(x, y, config.batch_size)
        # Validated once here, so the steps skip the per-batch value checks (host synchronisations).
        checks = trusted_inputs
    else:
        batches = data
        checks = contextlib.nullcontext
    model.to(device)
    aug.to(device)
    objective.to(device)
    f_params = [p for p in model.parameters() if p.requires_grad]
    phi_params = [p for p in aug.parameters() if p.requires_grad]
    total_epochs = config.pretrain_epochs + config.epochs
    optimisers: dict[str, torch.optim.Optimizer] = {}
    if f_params:
        optimisers["f"] = torch.optim.AdamW(f_params, lr=config.lr, weight_decay=config.weight_decay)
    if phi_params:
        optimisers["phi"] = torch.optim.Adam(phi_params, lr=config.aug_lr)
    if config.pretrain_epochs and "f" not in optimisers:
        raise ValueError("pretrain_epochs > 0 trains the classifier alone, but it has no trainable parameters")
    steps_per_epoch = len(batches) if hasattr(batches, "__len__") else None
    scheduler = None
    if "f" in optimisers and steps_per_epoch:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimisers["f"], T_max=max(1, total_epochs * steps_per_epoch)
        )

    out_path = Path(out_dir) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and out_path is not None and (out_path / CHECKPOINT_FILE).is_file():
        state = load_checkpoint(out_path / CHECKPOINT_FILE, device)
        model.load_state_dict(state["model"])
        aug.load_state_dict(state["aug"])
        objective.load_state_dict(state["objective"])
        for name, opt in optimisers.items():
            opt.load_state_dict(state["optimisers"][name])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
    elif out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / METRICS_FILE).unlink(missing_ok=True)

    for epoch in range(start_epoch, total_epochs):
        pretraining = epoch < config.pretrain_epochs
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        if isinstance(batches, TensorBatches):
            batches.generator.manual_seed(_epoch_seed(config.seed, epoch))
        # A frozen classifier stays in eval mode: its BatchNorm statistics are part of what is fixed.
        model.train("f" in optimisers)
        aug.train()
        objective.train()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        views = 0
        started = time.perf_counter()
        bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{total_epochs}" + (" (pre-train)" if pretraining else ""),
            disable=None if config.progress is None else not config.progress,
            leave=False,
        )
        for xb, yb in bar:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if pretraining:
                logits = model(xb)
                loss = task_loss(logits, yb).mean()
                metrics = {"task_loss": loss.detach()}
                targets = yb
            else:
                with checks():
                    out = aug(xb, yb)
                logits = model(out.images)
                targets = out.repeat(yb)
                terms = objective(task_loss(logits, targets), out)
                loss = terms.loss
                metrics = terms.metrics()
            for opt in optimisers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if pretraining:
                optimisers["f"].step()
            else:
                for opt in optimisers.values():
                    opt.step()
            if scheduler is not None:
                scheduler.step()
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0) + value * targets.shape[0]
            correct += (logits.detach().argmax(-1) == targets).sum()
            views += targets.shape[0]
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "phase": "pretrain" if pretraining else "joint",
            **{key: float(value) / views for key, value in sums.items()},
            "train_accuracy": float(correct) / views,
            "seconds": time.perf_counter() - started,
        }
        if not math.isfinite(record["task_loss"]):
            raise FloatingPointError(f"the training loss became non-finite in epoch {epoch + 1}")
        if evaluate_fn is not None:
            record.update(evaluate_fn(epoch))
        history.append(record)
        if out_path is not None:
            with open(out_path / METRICS_FILE, "a") as f:
                f.write(_json_line(record))
            state = {
                "model": model.state_dict(),
                "aug": aug.state_dict(),
                "objective": objective.state_dict(),
                "optimisers": {name: opt.state_dict() for name, opt in optimisers.items()},
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "history": history,
                "epoch": epoch,
                "config": asdict(config),
            }
            save_checkpoint(out_path / CHECKPOINT_FILE, state)
    return history


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Logits (N, K) of ``model`` for images x (N, C, H, W), in batches, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(xb.to(device)).cpu() for xb in x.split(batch_size)])
    finally:
        model.train(was_training)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of rows of logits (N, K) whose argmax equals y (N,)."""
    return float((logits.argmax(-1) == y).float().mean())
