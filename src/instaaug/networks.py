"""Invariance networks φ: from an input (or only its label, or nothing) to distribution parameters.

``InvarianceNet`` produces unconstrained outputs (B, out_dim) in one of three modes:

- ``instance``: a CNN of x (the InstaAug model);
- ``global``: one learned vector shared by every input (the paper's "w/o input" ablation);
- ``class``: one learned vector per class, looked up from the label y during training. At test time, when no
  label is passed, it falls back to the mean of the class vectors (the augmentation of an "average class");
  pass predicted labels as ``y`` to use the class-specific vectors instead.

``UniformRangeHead`` maps those outputs to intervals [low, high] for the uniform parameterisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .distributions import DEFAULT_MIN_WIDTH
from .models import build_backbone

MODES = ("instance", "global", "class")


class UniformRangeHead(nn.Module):
    """Maps raw outputs (B, 2D) to intervals low, high (B, D) inside the families' bounds.

    Columns [0, D) of the raw output drive the lower ends and [D, 2D) the upper ends:

        low  = -(m/2 + (|A| - m/2) · σ(r_low + c_low))
        high =   m/2 + (B  - m/2) · σ(r_high + c_high)

    for bounds (A, B) with A < 0 < B and minimum width m. So every interval contains the identity (0), may be
    asymmetric, never leaves the bounds and is at least m wide, which keeps the entropy finite. The constants
    c make a zero raw output give the initial interval [-init_half_width, init_half_width].

    With ``symmetric=True`` (Augerino's parameterisation) the raw output is (B, D) and
    high = -low = m/2 + (min(|A|, B) - m/2) · σ(r + c).
    """

    def __init__(
        self,
        bounds: tuple[Sequence[float], Sequence[float]],
        init_half_width: Sequence[float],
        min_width: float = DEFAULT_MIN_WIDTH,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        lo, hi = (torch.tensor(b, dtype=torch.float64) for b in bounds)
        init = torch.tensor(init_half_width, dtype=torch.float64)
        if not (lo.shape == hi.shape == init.shape) or lo.dim() != 1:
            raise ValueError("bounds and init_half_width must all have one entry per dimension")
        if bool((lo >= 0).any() | (hi <= 0).any()):
            raise ValueError(f"bounds must satisfy low < 0 < high, got {bounds}")
        half = min_width / 2
        if bool((init <= half).any() | (init >= torch.minimum(-lo, hi)).any()):
            raise ValueError(
                f"init_half_width must lie in ({half}, min(|low|, high)) per dimension, got {init.tolist()}"
            )
        self.min_width = min_width
        self.symmetric = symmetric
        self.dim = lo.shape[0]
        rooms = (torch.minimum(-lo, hi) - half,) if symmetric else (-lo - half, hi - half)
        room = torch.cat(rooms)
        self.register_buffer("room", room.float())
        self.register_buffer("offset", torch.logit((init.repeat(len(rooms)) - half) / room).float())

    @property
    def out_dim(self) -> int:
        """Length of the raw output this head consumes (D if symmetric, else 2D)."""
        return self.room.shape[0]

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """raw (B, out_dim) → low, high (B, D)."""
        extent = self.min_width / 2 + self.room * torch.sigmoid(raw + self.offset)
        if self.symmetric:
            return -extent, extent
        return -extent[:, : self.dim], extent[:, self.dim :]


class InvarianceNet(nn.Module):
    """φ: (x, y) → raw distribution parameters (B, out_dim), in mode ``instance``, ``global`` or ``class``.

    Args:
        out_dim: the number of raw outputs per input.
        mode: see the module docstring.
        network: the backbone for ``instance`` mode, ``small_cnn`` (default, ≈23k parameters at width 16) or
            ``preact_resnet18``.
        in_channels: image channels C.
        num_classes: the number of classes, required in ``class`` mode.
        width: the backbone's first-stage channel count.
        depth: the number of stages of ``small_cnn``.
        norm: the backbone's normalisation, ``layer`` (default), ``batch`` or ``none``. ``layer`` normalises each
            input on its own, so φ(x) does not depend on the rest of the batch and is the same in training and
            in eval mode; BatchNorm's running statistics lag φ's weights, which shifts the ranges seen at test
            time, in figures and in saved augmenters.

    The output layer starts at zero, so every mode begins from the head's initial interval for every input.
    """

    def __init__(
        self,
        out_dim: int,
        mode: str = "instance",
        network: str = "small_cnn",
        in_channels: int = 3,
        num_classes: int | None = None,
        width: int = 16,
        depth: int = 3,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.out_dim = out_dim
        self.num_classes = num_classes
        if mode == "instance":
            kwargs = {"width": width, "norm": norm}
            if network == "small_cnn":
                kwargs["depth"] = depth
            self.backbone = build_backbone(network, in_channels, **kwargs)
            self.output = nn.Linear(self.backbone.out_channels, out_dim)
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        elif mode == "global":
            self.output = nn.Parameter(torch.zeros(out_dim))
        else:
            if not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"mode 'class' needs num_classes ≥ 1, got {num_classes!r}")
            self.output = nn.Embedding(num_classes, out_dim)
            nn.init.zeros_(self.output.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), optional labels y (B,) → raw outputs (B, out_dim)."""
        batch = x.shape[0]
        if self.mode == "instance":
            features = self.backbone(x)[-1].mean(dim=(2, 3))
            return self.output(features)
        if self.mode == "global":
            return self.output.expand(batch, self.out_dim)
        if y is None:
            return self.output.weight.mean(0).expand(batch, self.out_dim)
        return self.output(y)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, out_dim={self.out_dim}"


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
