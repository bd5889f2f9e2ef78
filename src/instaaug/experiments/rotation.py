"""`instaaug run rotation`: learned rotation ranges on the rotated Mario/Iggy benchmark (the paper's Figure 5).

Four classes (two sprites, each upright or upside down), every image rotated by a ~ U[-π/4, π/4] from its class
orientation. An ideal per-image rotation range is [-π/2 - a, π/2 - a]: as wide as the label allows and shifted
against the image's own tilt, which no single global range can be. Metrics over the test images:

- ``coverage``: mean fraction of the label-preserving interval [-π/2 - a, π/2 - a] the learned interval covers;
- ``violation``: mean fraction of the learned interval outside [-3π/4 - a, 3π/4 - a] (beyond it a rotated image
  lands among the other orientation's training images);
- ``accuracy`` of the classifier on the (unaugmented) test images, for every method.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.sprites import builtin_sprites, load_mario_iggy, rotated_sprites
from ..models import build_classifier
from ..plots import plot_rotation_arcs
from ..train import TrainConfig
from .common import (
    METHODS,
    accuracy_on,
    check_methods,
    fit_method,
    flat_train_aliases,
    learned_ranges,
    torch_threads,
    write_metrics,
)

DESCRIPTION = "learned rotation ranges on the rotated Mario/Iggy sprites (4 classes); Figure 5"
TRANSFORMS = ("rotation",)


@dataclass(frozen=True)
class Config:
    """Settings of the rotation experiment (override with ``--set key=value``)."""

    seed: int = 0
    n_train: int = 2000
    n_test: int = 1000
    #: every method's training run (``--set train.KEY=VALUE``; its ``seed`` is ``seed``).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=20, pretrain_epochs=1, batch_size=64, lr=3e-3, aug_lr=1e-2)
    )
    methods: tuple[str, ...] = METHODS
    #: the entropy band of InstaAug: log-widths [log 0.95π, log 1.1π] around log π, the width of the
    #: label-preserving interval [-π/2 - a, π/2 - a].
    entropy_range: tuple[float, float] = (1.09, 1.24)
    lam_init: float = 0.05
    lam_rate: float = 1.02
    #: the fixed range of the random baseline: ±π/4 is the widest symmetric range that keeps every label.
    random_half_width: float = math.pi / 4
    augerino_weight: float = 0.01
    classifier_width: int = 16
    aug_width: int = 16
    threads: int = 0
    figure_examples: int = 8
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = flat_train_aliases()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", check_methods(self.methods))
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: less data, fewer epochs."""
        train = dataclasses.replace(cls().train, epochs=2, pretrain_epochs=1)
        return cls(n_train=400, n_test=200, train=train, figure_examples=4)


def coverage_and_violation(low: torch.Tensor, high: torch.Tensor, angle: torch.Tensor) -> tuple[float, float]:
    """Mean coverage and violation of rotation intervals low, high (N,) for images at angles a (N,).

    coverage = |[low, high] ∩ [-π/2 - a, π/2 - a]| / π;
    violation = |[low, high] \\ [-3π/4 - a, 3π/4 - a]| / (high - low).
    """

    def overlap(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return (torch.minimum(high, hi) - torch.maximum(low, lo)).clamp_min(0)

    keep = overlap(-math.pi / 2 - angle, math.pi / 2 - angle)
    safe = overlap(-3 * math.pi / 4 - angle, 3 * math.pi / 4 - angle)
    width = (high - low).clamp_min(1e-12)
    return float((keep / math.pi).mean()), float(((width - safe) / width).mean())


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train every method of ``config.methods``, write metrics.json, the arcs figure and the augmenters."""
    with torch_threads(config.threads):
        return _run(config, Path(out_dir), data)


def _run(config: Config, out: Path, data: str | os.PathLike | None) -> dict[str, Any]:
    methods = config.methods
    out.mkdir(parents=True, exist_ok=True)
    sprites = load_mario_iggy(data) if data is not None else builtin_sprites()
    gen = torch.Generator().manual_seed(config.seed)
    train_x, train_y, _ = rotated_sprites(sprites, config.n_train, gen)
    test_x, test_y, test_angle = rotated_sprites(sprites, config.n_test, gen)
    train_config = dataclasses.replace(config.train, seed=config.seed)
    results: dict[str, dict[str, Any]] = {}
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    started = time.perf_counter()
    for method in methods:
        torch.manual_seed(config.seed)
        model = build_classifier("small_cnn", 3, 4, width=config.classifier_width, depth=3)
        fitted = fit_method(
            method,
            model,
            (train_x, train_y),
            TRANSFORMS,
            train_config,
            out,
            random_ranges={"rotation": config.random_half_width},
            augerino_weight=config.augerino_weight,
            instaaug_options={"entropy_range": config.entropy_range, "width": config.aug_width},
            controller_options={"lam_init": config.lam_init, "rate": config.lam_rate},
        )
        metrics: dict[str, Any] = {
            "accuracy": accuracy_on(fitted.model, test_x, test_y, config.train.device),
            "train_seconds": round(fitted.seconds, 2),
        }
        if method in ("augerino", "instaaug"):
            low, high = (t[:, 0] for t in learned_ranges(fitted.aug, test_x, device=config.train.device))
            metrics["coverage"], metrics["violation"] = coverage_and_violation(low, high, test_angle)
            metrics["mean_width"] = float((high - low).mean())
            ranges[method] = (low, high)
        results[method] = metrics
    figure = None
    if ranges:
        n = config.figure_examples
        figure = plot_rotation_arcs(
            test_x[:n],
            test_angle[:n],
            test_y[:n],
            {k: (lo[:n], hi[:n]) for k, (lo, hi) in ranges.items()},
            out / "rotation_arcs.png",
        )
    write_metrics(
        out,
        "rotation",
        results,
        config,
        data=str(data) if data is not None else "builtin",
        figures=[figure.name] if figure else [],
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"experiment": "rotation", "methods": results, "config": asdict(config)}


def summary(metrics: dict[str, Any]) -> str:
    """A short table of the results."""
    lines = [f"{'method':10s} {'accuracy':>9s} {'coverage':>9s} {'violation':>9s}"]
    for name, m in metrics["methods"].items():
        cov = f"{m['coverage']:.3f}" if "coverage" in m else "-"
        vio = f"{m['violation']:.3f}" if "violation" in m else "-"
        lines.append(f"{name:10s} {m['accuracy']:9.3f} {cov:>9s} {vio:>9s}")
    return "\n".join(lines)
