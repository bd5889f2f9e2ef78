"""Downstream: a frozen conditioned backbone, a linear readout, and the invariance i learned with it.

``InvarianceProbe`` learns the readout and i jointly by gradient descent (i through a sigmoid, or projected onto
[0, 1] after each step as in the paper), with separate learning rates, and keeps the epoch with the best
validation score. The cheap baselines fit only a readout on cached features: ``evaluate_fixed`` at a fixed i
(e.g. each trained corner) and ``grid_search`` over a grid of i.

Scores: ``accuracy`` (a fraction) for classification, ``r2`` for regression — the coefficient of determination
over the whole evaluated set, averaged over the output dimensions.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..seeding import epoch_seed
from ..step import optimiser_step
from ..train import TensorBatches
from ..validation import check_int_fields, check_positive_int, trusted_inputs
from .backbones import ConditionedBackbone
from .space import check_inputs, check_invariance

TASKS = ("classification", "regression")
LOSSES = {"classification": ("cross_entropy",), "regression": ("mse", "l1")}
PARAMETRISATIONS = ("clamp", "sigmoid")

Data = tuple[torch.Tensor, torch.Tensor]


def metric_name(task: str) -> str:
    """The score of a task: ``"accuracy"`` or ``"r2"``."""
    _check_task(task)
    return "accuracy" if task == "classification" else "r2"


def score(pred: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """Accuracy of logits pred (N, K) against labels y (N,), or R² of pred (N, K) against targets y (N, K) or (N,)
    over the whole set (1 − SSE / SST per output dimension, averaged)."""
    _check_task(task)
    if task == "classification":
        return float((pred.argmax(-1) == y).float().mean())
    y = y.reshape(pred.shape).to(pred.dtype)
    sse = (pred - y).pow(2).sum(0)
    sst = (y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return float((1 - sse / sst).mean())


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _task_loss(pred: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "cross_entropy":
        return F.cross_entropy(pred, y)
    y = y.reshape(pred.shape)
    return F.mse_loss(pred, y) if loss == "mse" else F.l1_loss(pred, y)


class Readout(nn.Module):
    """A linear readout: features (N, D) standardised (batch statistics while training, running ones in eval:
    a fixed affine map) → a linear layer → (N, K); regression outputs are mapped back to the targets' scale."""

    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, feature_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(feature_dim, affine=False)
        self.linear = nn.Linear(feature_dim, num_outputs)
        self.register_buffer("y_mean", torch.zeros(num_outputs))
        self.register_buffer("y_std", torch.ones(num_outputs))

    def set_target_scale(self, y: torch.Tensor) -> None:
        """Regression: predict in units of the training targets' standard deviation y (N, K) around their mean."""
        y = y.reshape(y.shape[0], -1)
        self.y_mean.copy_(y.mean(0))
        self.y_std.copy_(y.std(0).clamp_min(1e-6))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Features h (N, D) → outputs (N, K)."""
        return self.linear(self.norm(h)) * self.y_std + self.y_mean


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of ``InvarianceProbe`` and of the cached-feature readouts.

    Attributes:
        loss: ``"cross_entropy"`` (classification), ``"mse"`` or ``"l1"`` (regression); None: the task's first.
        parametrisation: ``"clamp"`` (i itself, projected onto [0, 1] after each step, the paper's choice) or
            ``"sigmoid"`` (i = sigmoid(θ)).
        init: the starting value of every entry of i.
        epochs: joint epochs over the training data (each a backbone forward and backward per batch).
        batch_size: inputs per joint step.
        lr: the readout's Adam learning rate.
        i_lr: i's Adam learning rate (of θ with the sigmoid).
        weight_decay: the readout's decoupled weight decay.
        readout_steps: full-batch Adam steps of a readout fitted on cached features.
        readout_lr: their learning rate.
        refit: after the joint phase, refit the readout at the selected i on cached features with the same recipe
            as ``evaluate_fixed``, so learned and fixed i are compared with equally well fitted readouts.
        seed: the shuffling of the joint phase.
        device: where to run.
    """

    loss: str | None = None
    parametrisation: str = "clamp"
    init: float = 0.5
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-2
    i_lr: float = 2e-2
    weight_decay: float = 1e-4
    readout_steps: int = 300
    readout_lr: float = 2e-2
    refit: bool = True
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {self.parametrisation!r}")
        if not 0 <= self.init <= 1 or (self.parametrisation == "sigmoid" and not 0 < self.init < 1):
            raise ValueError(f"init must lie in [0, 1] ((0, 1) with the sigmoid), got {self.init}")
        check_positive_int(self.batch_size, "batch_size")
        check_int_fields(self, ("epochs",))


def _check_targets(y: Any, n: int, task: str, num_outputs: int, name: str) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if task == "classification":
        if y.dtype.is_floating_point or y.shape != (n,):
            raise ValueError(f"{name} must be integer labels of shape ({n},), got {y.dtype} {tuple(y.shape)}")
        lo, hi = torch.aminmax(y)
        if int(lo) < 0 or int(hi) >= num_outputs:
            raise ValueError(f"{name} must lie in [0, {num_outputs}), got range [{int(lo)}, {int(hi)}]")
    elif not y.is_floating_point() or y.reshape(n, -1).shape != (n, num_outputs) or y.shape[0] != n:
        raise ValueError(f"{name} must be float targets of shape ({n}, {num_outputs}), got {y.dtype} {tuple(y.shape)}")


@torch.no_grad()
def extract_features(
    backbone: ConditionedBackbone, x: torch.Tensor, i: Any, batch_size: int = 512, device: str = "cpu"
) -> torch.Tensor:
    """Features (N, D) of x (N, C, H, W) under a fixed i (M,), in eval mode, on the CPU."""
    check_inputs(x, backbone.config.in_channels)
    i = check_invariance(i, backbone.groups).to(device)
    backbone.eval().to(device)
    with trusted_inputs():
        return torch.cat([backbone.features(xb.to(device), i).cpu() for xb in x.split(batch_size)])


def fit_readout(
    train: Data, val: Data, task: str, num_outputs: int, config: ProbeConfig | None = None
) -> tuple[Readout, float]:
    """Fit a ``Readout`` on cached features: train = (features (N, D), targets), val likewise.

    Full-batch AdamW for ``config.readout_steps`` steps; the step with the best validation score (checked every
    10 steps) is kept. Returns the readout (eval mode) and its validation score.
    """
    config = config or ProbeConfig()
    loss_name = config.loss or LOSSES[task][0]
    (h, y), (hv, yv) = train, val
    readout = Readout(h.shape[1], num_outputs)
    if task == "regression":
        readout.set_target_scale(y)
    optimiser = torch.optim.AdamW(readout.parameters(), lr=config.readout_lr, weight_decay=config.weight_decay)
    best, best_state = -math.inf, copy.deepcopy(readout.state_dict())
    for step in range(1, config.readout_steps + 1):
        readout.train()
        loss = _task_loss(readout(h), y, loss_name)
        optimiser_step(loss, optimiser)
        if step % 10 == 0 or step == config.readout_steps:
            readout.eval()
            with torch.no_grad():
                # BatchNorm's running statistics lag while training; evaluate with the full-batch ones.
                readout.norm.running_mean.copy_(h.mean(0))
                readout.norm.running_var.copy_(h.var(0))
                s = score(readout(hv), yv, task)
            if s > best:
                best, best_state = s, copy.deepcopy(readout.state_dict())
    readout.load_state_dict(best_state)
    return readout.eval(), best


def evaluate_fixed(
    backbone: ConditionedBackbone,
    i: Any,
    train: Data,
    val: Data,
    test: Data,
    task: str,
    num_outputs: int,
    config: ProbeConfig | None = None,
) -> dict[str, float]:
    """Fit a readout at a fixed i on cached features of train (x, y), select on val; ``{"val", "test"}`` scores."""
    config = config or ProbeConfig()
    feats = [extract_features(backbone, x, i, device=config.device) for x in (train[0], val[0], test[0])]
    readout, val_score = fit_readout((feats[0], train[1]), (feats[1], val[1]), task, num_outputs, config)
    with torch.no_grad():
        test_score = score(readout(feats[2]), test[1], task)
    return {"val": val_score, "test": test_score}


def grid_search(
    backbone: ConditionedBackbone,
    train: Data,
    val: Data,
    test: Data,
    task: str,
    num_outputs: int,
    points: int = 3,
    config: ProbeConfig | None = None,
) -> dict[str, Any]:
    """Evaluate every i of the grid {0, 1/(points−1), …, 1}^M with cached features; select i on validation.

    Returns ``{"i": best i (list), "val": its validation score, "test": its test score, "grid": [[i, val], ...]}``.
    """
    check_positive_int(points, "points")
    values = [k / (points - 1) for k in range(points)] if points > 1 else [0.5]
    grid = []
    best: dict[str, Any] = {"val": -math.inf}
    for i in itertools.product(values, repeat=backbone.invariance_dim):
        result = evaluate_fixed(backbone, list(i), train, val, test, task, num_outputs, config)
        grid.append([list(i), result["val"]])
        if result["val"] > best["val"]:
            best = {"i": list(i), **result}
    return {**best, "grid": grid}


class InvarianceProbe(nn.Module):
    """A frozen conditioned backbone, a linear readout, and a learned invariance i ∈ [0, 1]^M.

    The backbone's parameters are frozen and it stays in eval mode whatever ``train()`` is called with; only the
    readout and i learn. Predictions: ``probe(x)`` → (B, K) logits or regression outputs.

    Args:
        backbone: a pre-trained ``ConditionedBackbone``.
        task: ``"classification"`` or ``"regression"``.
        num_outputs: classes K, or regression outputs K.
        config: a ``ProbeConfig``.
    """

    def __init__(
        self, backbone: ConditionedBackbone, task: str, num_outputs: int, config: ProbeConfig | None = None
    ) -> None:
        super().__init__()
        _check_task(task)
        check_positive_int(num_outputs, "num_outputs")
        self.config = config or ProbeConfig()
        self.loss_name = self.config.loss or LOSSES[task][0]
        if self.loss_name not in LOSSES[task]:
            raise ValueError(f"loss must be one of {LOSSES[task]} for {task}, got {self.loss_name!r}")
        self.task, self.num_outputs = task, num_outputs
        self.backbone = backbone.requires_grad_(False).eval()
        self.readout = Readout(backbone.feature_dim, num_outputs)
        init = torch.full((backbone.invariance_dim,), float(self.config.init))
        self.theta = nn.Parameter(torch.logit(init) if self.config.parametrisation == "sigmoid" else init)
        self.history: list[dict[str, Any]] = []

    def train(self, mode: bool = True) -> InvarianceProbe:
        """Set the readout's mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def invariance(self) -> torch.Tensor:
        """The current i (M,) in [0, 1]."""
        return torch.sigmoid(self.theta) if self.config.parametrisation == "sigmoid" else self.theta

    def learned_i(self) -> dict[str, float]:
        """The current i as a dict group name → value."""
        return {g: float(v) for g, v in zip(self.backbone.groups, self.invariance.detach().cpu(), strict=True)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs x (B, C, H, W) → outputs (B, K) under the learned i."""
        check_inputs(x, self.backbone.config.in_channels)
        with trusted_inputs():
            return self.readout(self.backbone.features(x, self.invariance))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Outputs (N, K) for x (N, C, H, W), in eval mode, on the CPU."""
        self.eval()
        device = self.theta.device
        return torch.cat([self(xb.to(device)).cpu() for xb in x.split(batch_size)])

    def score(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy or R² (see ``score``) on x (N, C, H, W), y."""
        return score(self.predict(x), y, self.task)

    def fit(self, train: Data, val: Data) -> list[dict[str, Any]]:
        """Learn the readout and i jointly on train = (x, y), keeping the epoch with the best score on val.

        Then, with ``config.refit``, the readout is refitted at the selected i on cached features. Returns one
        record per epoch: ``epoch``, ``loss``, ``val``, ``i`` (group → value).
        """
        c = self.config
        (x, y), (xv, yv) = train, val
        for name, (xs, ys) in (("training", train), ("validation", val)):
            check_inputs(xs, self.backbone.config.in_channels, name=f"{name} inputs")
            _check_targets(ys, xs.shape[0], self.task, self.num_outputs, f"{name} targets")
        device = torch.device(c.device)
        self.to(device)
        if self.task == "regression":
            self.readout.set_target_scale(y)
        optimiser = torch.optim.AdamW(
            [
                {"params": self.readout.parameters(), "lr": c.lr, "weight_decay": c.weight_decay},
                {"params": [self.theta], "lr": c.i_lr, "weight_decay": 0.0},
            ]
        )
        batches = TensorBatches(x, y, c.batch_size)
        best = (-math.inf, copy.deepcopy(self.state_dict()))
        self.history = []
        for epoch in range(c.epochs):
            batches.generator.manual_seed(epoch_seed(c.seed, epoch))
            self.train()
            loss_sum, steps = torch.zeros((), device=device), 0
            for xb, yb in batches:
                if xb.shape[0] < 2:  # BatchNorm needs two samples
                    continue
                with trusted_inputs():
                    pred = self.readout(self.backbone.features(xb.to(device), self.invariance))
                loss = _task_loss(pred, yb.to(device), self.loss_name)
                optimiser_step(loss, optimiser)
                if c.parametrisation == "clamp":
                    with torch.no_grad():
                        self.theta.clamp_(0, 1)
                loss_sum += loss.detach()
                steps += 1
            val_score = self.score(xv, yv)
            self.history.append(
                {"epoch": epoch + 1, "loss": float(loss_sum) / max(1, steps), "val": val_score, "i": self.learned_i()}
            )
            if val_score > best[0]:
                best = (val_score, copy.deepcopy(self.state_dict()))
        self.load_state_dict(best[1])
        if c.refit:
            i = self.invariance.detach()
            feats = [extract_features(self.backbone, xs, i, device=c.device) for xs in (x, xv)]
            readout, _ = fit_readout((feats[0], y), (feats[1], yv), self.task, self.num_outputs, c)
            self.readout.load_state_dict(readout.state_dict())
        self.eval()
        return self.history
