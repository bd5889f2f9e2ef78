"""`instaaug run rotation`: learned rotation ranges on the rotated Mario/Iggy benchmark (the paper's Figure 5).

Four classes (two sprites, each upright or upside down), every image rotated by a ~ U[-π/4, π/4] from its class
orientation. An ideal per-image rotation range is [-π/2 - a, π/2 - a]: as wide as the label allows and shifted
against the image's own tilt, which no single global range can be. Metrics over the test images:

- ``coverage``: mean fraction of the label-preserving interval [-π/2 - a, π/2 - a] the learned interval covers;
- ``violation``: mean fraction of the learned interval outside [-3π/4 - a, 3π/4 - a] (beyond it a rotated image
  lands among the other orientation's training images);
- ``accuracy`` of the classifier on the (unaugmented) test images, for every method.

With ``seeds`` > 1 every method is trained once per seed, each seed's run the single run at that seed (its own
data, initial weights and training), and every metric is reported as its mean, ``<metric>_std`` and the number of
``seeds``, with each seed's values under ``per_seed``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..augment import InstaAug
from ..data.sprites import builtin_sprites, load_mario_iggy, rotated_sprites
from ..distributed import is_main_process
from ..models import build_classifier
from ..plots import plot_rotation_arcs
from ..train import TrainConfig, train
from ..validation import check_int_fields
from .common import (
    UNIFORM_METHODS,
    accuracy_on,
    build_method,
    flat_train_aliases,
    learned_ranges,
    torch_threads,
    write_metrics,
)
from .parallel import check_seeds, run_config_seeds, run_dir, training_seeds

#: The methods (``common.UNIFORM_METHODS``: none, random, augerino, instaaug), in reporting order.
METHODS = UNIFORM_METHODS

DESCRIPTION = "learned rotation ranges on the rotated Mario/Iggy sprites (4 classes); Figure 5"
TRANSFORMS = ("rotation",)


@dataclass(frozen=True)
class Config:
    """Settings of the rotation experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, … seed + N - 1; or a list of seeds. Each seed's run is the single run at
    #: that seed (its own data, initial weights and training).
    seeds: int | tuple[int, ...] = 1
    n_train: int = 2000
    n_test: int = 1000
    #: every method's training run (``--set train.KEY=VALUE``; its ``seed`` is ``seed``).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=20, pretrain_epochs=1, batch_size=64, lr=3e-3, aug_lr=1e-2)
    )
    methods: tuple[str, ...] = METHODS.names
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
    #: torch threads per run (0: 1 when runs go to several worker processes, else torch's default).
    threads: int = 0
    #: worker processes, one run (method, seed) each at a time (0: one per available core). The README's figures
    #: were measured in one process (``workers=1``); other thread counts change them by float rounding.
    workers: int = 0
    figure_examples: int = 8
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = flat_train_aliases()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        check_seeds(self)
        check_int_fields(self, ("workers", "threads"), least=0)
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: less data, fewer epochs."""
        train = dataclasses.replace(cls().train, epochs=2, pretrain_epochs=1)
        # workers=1: starting worker processes would cost more than these tiny runs.
        return cls(n_train=400, n_test=200, train=train, figure_examples=4, workers=1)


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
    """Train every method of ``config.methods`` for every seed; write metrics.json, the arcs figure and the
    augmenters (under ``out_dir/METHOD/``, or ``out_dir/METHOD/seed<S>/`` with several seeds)."""
    with torch_threads(config.threads):
        return _run(config, Path(out_dir), data)


def _datasets(
    data: str | None, seed: int, n_train: int, n_test: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The training images and labels, and the test images, labels and tilts, of the run at ``seed``."""
    sprites = load_mario_iggy(data) if data is not None else builtin_sprites()
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y, _ = rotated_sprites(sprites, n_train, gen)
    return (train_x, train_y), rotated_sprites(sprites, n_test, gen)


def _train_job(job: tuple[Config, str, int, str], data: str | None = None) -> dict[str, float]:
    """Train and evaluate one (method, seed); save a learned augmenter to ``run_dir``."""
    config, method, seed, out = job
    (train_x, train_y), (test_x, test_y, test_angle) = _datasets(data, seed, config.n_train, config.n_test)
    torch.manual_seed(seed)
    model = build_classifier("small_cnn", 3, 4, width=config.classifier_width, depth=3)
    aug, objective = build_method(
        method,
        TRANSFORMS,
        in_channels=train_x.shape[1],
        random_ranges={"rotation": config.random_half_width},
        augerino_weight=config.augerino_weight,
        instaaug_options={"entropy_range": config.entropy_range, "width": config.aug_width},
        controller_options={"lam_init": config.lam_init, "rate": config.lam_rate},
    )
    directory = run_dir(out, method, seed, config)
    started = time.perf_counter()
    train(model, aug, objective, (train_x, train_y), dataclasses.replace(config.train, seed=seed), out_dir=directory)
    seconds = time.perf_counter() - started
    if isinstance(aug, InstaAug):
        aug.save(directory)
    model.eval()
    metrics = {
        "accuracy": accuracy_on(model, test_x, test_y, config.train.device),
        "train_seconds": round(seconds, 2),
    }
    if method in ("augerino", "instaaug"):
        low, high = (t[:, 0] for t in learned_ranges(aug, test_x, device=config.train.device))
        metrics["coverage"], metrics["violation"] = coverage_and_violation(low, high, test_angle)
        metrics["mean_width"] = float((high - low).mean())
    return metrics


def _run(config: Config, out: Path, data: str | os.PathLike | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    seeds = training_seeds(config.seed, config.seeds)
    path = str(data) if data is not None else None
    started = time.perf_counter()
    # A partial of a module-level function pickles for the workers.
    job = functools.partial(_train_job, data=path)
    runs = run_config_seeds(job, config, config.methods, out, description="rotation runs", seeds=seeds)
    shown = [m for m in config.methods if m in ("augerino", "instaaug")]
    figure = None
    if shown and is_main_process():  # under torchrun, rank 0 alone saved the augmenters
        figure = _arcs_figure(config, shown, seeds[0], path, out)
    write_metrics(
        out,
        "rotation",
        runs.results,
        config,
        data=str(data) if data is not None else "builtin",
        figures=[figure.name] if figure else [],
        per_seed=runs.per_seed,
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"experiment": "rotation", "methods": runs.results, "config": asdict(config)}


def _arcs_figure(config: Config, methods: list[str], seed: int, data: str | None, out: Path) -> Path:
    """The learned rotation arcs of ``methods`` (their augmenters at ``seed``) on the first test images."""
    n = config.figure_examples
    _, (test_x, test_y, test_angle) = _datasets(data, seed, config.n_train, config.n_test)
    ranges = {}
    for method in methods:
        aug = InstaAug.load(run_dir(out, method, seed, config))
        low, high = (t[:, 0] for t in learned_ranges(aug, test_x[:n]))
        ranges[method] = (low, high)
    return plot_rotation_arcs(test_x[:n], test_angle[:n], test_y[:n], ranges, out / "rotation_arcs.png")


def _cell(m: dict[str, Any], key: str, width: int) -> str:
    """``m[key]`` (with ± its standard deviation over several seeds) right-aligned in ``width``, or ``-``."""
    if key not in m:
        return f"{'-':>{width}s}"
    if m.get("seeds", 1) > 1:
        return f"{m[key]:.3f} ± {m[f'{key}_std']:.3f}".rjust(width)
    return f"{m[key]:{width}.3f}"


def summary(metrics: dict[str, Any]) -> str:
    """A short table of the results (mean ± std over seeds where there are several)."""
    several = any(m.get("seeds", 1) > 1 for m in metrics["methods"].values())
    width = 15 if several else 9
    lines = [f"{'method':10s} {'accuracy':>{width}s} {'coverage':>{width}s} {'violation':>{width}s}"]
    for name, m in metrics["methods"].items():
        cells = " ".join(_cell(m, key, width) for key in ("accuracy", "coverage", "violation"))
        lines.append(f"{name:10s} {cells}")
    return "\n".join(lines)
