"""The entropy controller: λ is raised when the mean entropy is too low and lowered when it is too high."""

from __future__ import annotations

import math

import torch
from torch import nn

from .distributed import all_reduce_mean


class EntropyController(nn.Module):
    """Keeps the running mean of the *training* entropy inside [h_min, h_max] by adjusting λ.

    After every training step, ``update(mean_entropy)`` folds the batch's mean entropy into a running mean and
    multiplies λ by ``rate`` if that mean is below ``h_min``, divides it by ``rate`` if above ``h_max``, and
    leaves it otherwise; λ stays in [lam_min, lam_max]. Feed it training batches only: the controller never
    needs, and must never see, test data.

    Anti-windup: φ needs time to respond to λ, so λ only moves if, at its current trend, the running entropy
    would still be outside the band ``horizon`` steps from now. The trend is the gap between the running mean
    and a slower one (momentum ``trend_momentum``) divided by the difference of their lags. Without this, λ keeps
    compounding while the entropy catches up, the entropy then overshoots the band, and a saturated φ (every
    interval at its widest) may never come back; a slow drift towards the band, on the other hand, does not
    hold λ. (The reference implementation holds λ per epoch whenever the entropy is already moving.)

    All state lives in buffers (move the controller to the training device with ``.to``), so updates never
    synchronise with the host, and ``state_dict`` / ``load_state_dict`` save and restore it with a run.

    Under ``torch.distributed`` (e.g. launched with torchrun), ``update`` first averages the batch entropy over all
    processes (one scalar all-reduce, asynchronous on GPU), so every rank folds in the same value and λ stays
    identical on every rank at every step. This is a collective: every rank must call ``update`` at the same steps
    (``sync=False`` turns it off, for a controller updated on one rank only).

    Args:
        h_min, h_max: the target entropy band (nats).
        lam_init: the starting λ (small: the task loss leads at first).
        rate: the multiplicative step (> 1).
        lam_min, lam_max: bounds on λ.
        momentum: weight of the past in the running mean of the entropy (0 uses the last batch only).
        trend_momentum: the same for the slower running mean that measures the trend (> momentum).
        horizon: the look-ahead, in steps, of the anti-windup rule (0 turns it off).
        sync: average the entropy over processes when ``torch.distributed`` is initialised.
    """

    def __init__(
        self,
        h_min: float,
        h_max: float,
        lam_init: float = 0.05,
        rate: float = 1.02,
        lam_min: float = 1e-4,
        lam_max: float = 10.0,
        momentum: float = 0.9,
        trend_momentum: float = 0.95,
        horizon: float = 100.0,
        sync: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("h_min", h_min), ("h_max", h_max)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if h_min > h_max:
            raise ValueError(f"h_min must be ≤ h_max, got [{h_min}, {h_max}]")
        if not 0 < lam_min <= lam_init <= lam_max:
            raise ValueError(f"need 0 < lam_min ≤ lam_init ≤ lam_max, got {lam_min}, {lam_init}, {lam_max}")
        if rate <= 1:
            raise ValueError(f"rate must be > 1, got {rate}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not momentum < trend_momentum < 1:
            raise ValueError(f"trend_momentum must be in (momentum, 1), got {trend_momentum}")
        if not (math.isfinite(horizon) and horizon >= 0):
            raise ValueError(f"horizon must be a finite number ≥ 0, got {horizon}")
        self.h_min, self.h_max = float(h_min), float(h_max)
        self.rate, self.lam_min, self.lam_max = float(rate), float(lam_min), float(lam_max)
        self.momentum, self.trend_momentum, self.horizon = momentum, trend_momentum, float(horizon)
        self.sync = bool(sync)
        # For a linear trend, a running mean with momentum m lags m / (1 - m) steps behind.
        self._lag = trend_momentum / (1 - trend_momentum) - momentum / (1 - momentum)
        self.register_buffer("lam", torch.tensor(float(lam_init)))
        self.register_buffer("running_entropy", torch.tensor(0.0))
        self.register_buffer("slow_entropy", torch.tensor(0.0))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, mean_entropy: torch.Tensor) -> torch.Tensor:
        """Fold in a training batch's mean entropy (a 0-d tensor) and adjust λ; returns the new λ (0-d).

        Distributed: the mean over processes of their batch means (equal-sized shards give the global batch mean).
        """
        h = mean_entropy.detach().to(self.running_entropy)
        if self.sync:
            h = all_reduce_mean(h)
        first = self.steps == 0
        self.running_entropy = torch.where(first, h, self.momentum * self.running_entropy + (1 - self.momentum) * h)
        m = self.trend_momentum
        self.slow_entropy = torch.where(first, h, m * self.slow_entropy + (1 - m) * h)
        fast = self.running_entropy
        projected = fast + (fast - self.slow_entropy) / self._lag * self.horizon
        raise_lam = (fast < self.h_min) & (projected < self.h_min)
        lower_lam = (fast > self.h_max) & (projected > self.h_max)
        factor = torch.where(raise_lam, self.rate, torch.where(lower_lam, 1 / self.rate, 1.0))
        self.lam = (self.lam * factor).clamp(self.lam_min, self.lam_max)
        self.steps = self.steps + 1
        return self.lam

    def extra_repr(self) -> str:
        return f"band=[{self.h_min}, {self.h_max}], rate={self.rate}, lam∈[{self.lam_min}, {self.lam_max}]"


class AnnealedEntropyPull(nn.Module):
    """The InstaAug reference code's contrastive entropy term: a quadratic pull w·(H − H*(t))² towards a target H*
    annealed linearly from ``start`` to ``end`` over ``steps`` steps (the paper's adaptive λ is not used there).

    It plugs in where an ``EntropyController`` goes: the objective's −λ·H term has the pull's gradient when
    λ = 2w·(H*(t) − H), so ``update`` sets λ from the batch's mean entropy for the next step (one step late; λ may
    be negative, pulling the entropy down). Kept to compare with the controller, not as a recommendation.

    Args:
        start, end: the target entropy at the first step and from step ``steps`` on (nats).
        steps: annealing steps (≥ 1).
        weight: w > 0.
        sync: average the entropy over processes when ``torch.distributed`` is initialised.
    """

    def __init__(self, start: float, end: float, steps: int, weight: float = 1.0, sync: bool = True) -> None:
        super().__init__()
        for name, value in (("start", start), ("end", end), ("weight", weight)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int ≥ 1, got {steps!r}")
        self.start, self.end, self.anneal_steps, self.weight = float(start), float(end), steps, float(weight)
        self.sync = bool(sync)
        self.register_buffer("lam", torch.tensor(0.0))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def target(self) -> torch.Tensor:
        """H*(t) at the current step (0-d)."""
        t = (self.steps.float() / self.anneal_steps).clamp(max=1.0)
        return self.start + (self.end - self.start) * t

    @torch.no_grad()
    def update(self, mean_entropy: torch.Tensor) -> torch.Tensor:
        """Fold in a training batch's mean entropy (0-d) and set λ for the next step; returns it."""
        h = mean_entropy.detach().to(self.lam)
        if self.sync:
            h = all_reduce_mean(h)
        self.steps = self.steps + 1
        self.lam = 2 * self.weight * (self.target() - h)
        return self.lam

    def extra_repr(self) -> str:
        return f"target {self.start} → {self.end} over {self.anneal_steps} steps, weight={self.weight}"


class PartControllers(nn.Module):
    """One entropy controller per part of a composite distribution (``Product``: crop, intervals, flip, in order).

    With one band on the total entropy, φ may meet it with whichever part costs the task least, e.g. keep the
    crops fixed and widen the colour ranges instead. ``InstaAugObjective`` given a ``PartControllers`` adds
    Σ_i λ_i·H_i, each part's λ_i kept by its own controller in that part's band.

    Args:
        controllers: one ``EntropyController`` per part, in the distribution's part order.
    """

    def __init__(self, controllers: list[EntropyController]) -> None:
        super().__init__()
        if not controllers:
            raise ValueError("PartControllers needs at least one controller")
        self.parts = nn.ModuleList(controllers)

    @property
    def lam(self) -> torch.Tensor:
        """λ of every part (P,)."""
        return torch.stack([c.lam for c in self.parts])

    @torch.no_grad()
    def update(self, part_entropies: torch.Tensor) -> torch.Tensor:
        """Fold in a training batch's mean entropy of every part (P,); returns the new λs (P,)."""
        if part_entropies.shape != (len(self.parts),):
            raise ValueError(f"expected {len(self.parts)} part entropies, got shape {tuple(part_entropies.shape)}")
        return torch.stack([c.update(h) for c, h in zip(self.parts, part_entropies, strict=True)])
