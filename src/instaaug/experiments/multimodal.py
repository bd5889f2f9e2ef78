"""`instaaug run multimodal`: invariances that are unions of arcs (Singhal et al., ICCV 2023, at small scale).

Shapes with 1-, 2- and 3-fold rotational symmetry, each "up" or "down" (``instaaug.data.symmetric``): the rotations
that keep an image's label are n arcs of width π/n, together half the circle. Every method trains a classifier and
its augmenter jointly (one pre-training epoch, then joint epochs) and is measured on test images of the training
shapes and on test images of three held-out shapes φ never saw:

- ``none``: no augmentation; ``augerino``: one learned global symmetric range;
- ``uniform``: InstaAug's one interval per input; ``mixture``: K weighted intervals per input (``UniformMixture``);
  ``flow``: a conditional normalizing flow per input on the circle (``FlowRanges``).

InstaAug's three share φ, the entropy band (0.4 … 0.7 nats: see ``Config.entropy_range``) and the λ controller.

With ``frozen=true`` the classifier is trained first on views inside each image's true arcs (``oracle_views``) and
frozen, and φ alone learns what it is invariant to. Two ways out of "one arc around the identity" (issue 18's
finding), both inductive biases stated as such:

- ``mixture_init="symmetric"``: the mixture's components start at the identity turned by multiples of 2π/6
  (``symmetric_centres``), narrow and equally weighted: those on true arcs widen, those in the gaps lose weight;
- ``flow_fit="sampling"``: the flow is fitted by maximum likelihood to the frozen classifier's Gibbs density
  exp(−L/T) (``fit_by_sampling``, a forward KL that covers every arc) instead of by E[L] − λ·H (a reverse KL,
  mode-seeking: it stays on one arc).

``init_width``/``flow_init_width`` start the distributions wide, ``anneal_epochs`` moves the entropy band down from
``entropy_start`` (``AnnealedBand``), ``copies`` sets the views per input.
Metrics, from each test image's learned density on a grid of ``grid`` rotations:

- ``coverage``: the fraction of the image's label-preserving set where the density is at least
  ``coverage_threshold`` × 1/π (the density of a uniform distribution on the true set);
- ``violation``: the probability mass outside the label-preserving set;
- both per symmetry order (``_n1``, ``_n2``, ``_n3``), for the symmetric orders together (``_sym``), and on the
  held-out shapes (``heldout_``);
- ``accuracy``: the classifier on the test images of the training shapes;
- alignment (``canonical_``): a shape classifier trained on upright images only (3 classes) is given the "up" test
  images as they are (tilted by up to P/8) and canonicalised by each augmenter (``InstaAug.canonicalise``: rotated
  by the mode of its distribution), with the mean residual tilt |a + mode| modulo the period.

With ``seeds`` > 1 every method is trained once per seed, each seed's run the single run at that seed (its own
data, classifiers and training), and every metric is reported as its mean, ``<metric>_std`` and the number of
``seeds``, with each seed's values under ``per_seed``. A run goes in three steps, each of independent jobs
(``parallel``): the frozen classifier of every seed (with ``frozen=true``; saved under ``frozen_classifier/``),
every (method, seed), and the alignment test of every seed (on the saved augmenters).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..augment import Augmenter, InstaAug
from ..baselines import Augerino, NoAugment
from ..controller import EntropyController
from ..data.symmetric import (
    HELD_OUT_SHAPES,
    SHAPES,
    TRAIN_SHAPES,
    SymmetricShapes,
    draw,
    invariance_mask,
    symmetric_shapes,
)
from ..distributed import barrier, is_main_process
from ..distributions.mixture import symmetric_centres
from ..io import load_tensors, save_tensors
from ..models import build_classifier
from ..objective import AugerinoObjective, InstaAugObjective, TaskObjective
from ..plots import plot_rotation_densities
from ..step import optimiser_step
from ..train import TrainConfig, predict, train
from ..transforms import FAMILIES, TransformStack
from ..validation import check_int_fields
from .common import flat_train_aliases, run_on_builtin_data, write_metrics
from .methods import MethodRegistry
from .parallel import check_seeds, run_config_seeds, run_dir, run_jobs, summarise_seeds, training_seeds

DESCRIPTION = "multimodal rotation invariances (1-, 2-, 3-fold symmetric shapes): uniform vs mixture vs flow"
LEARNED = ("augerino", "uniform", "mixture", "flow")
#: The methods the alignment test canonicalises with (Augerino's one global range has no per-image mode).
ALIGNED = ("uniform", "mixture", "flow")
#: The training keys multimodal used to hold flat, still accepted (with a DeprecationWarning) as ``train.KEY``.
_FLAT_KEYS = ("epochs", "pretrain_epochs", "batch_size", "lr", "aug_lr", "aug_lr_schedule", "device")
MIXTURE_INITS = ("spread", "symmetric")
FLOW_FITS = ("objective", "sampling")


class AnnealedBand(EntropyController):
    """An ``EntropyController`` whose band moves linearly from ``start`` to ``end`` over ``anneal_steps`` steps,
    then stays at ``end``: the entropy is held high first and brought down to the target gradually.

    The band follows the controller's own step count (a buffer), so a restored controller resumes where it was.
    """

    def __init__(self, start: tuple[float, float], end: tuple[float, float], anneal_steps: int, **options: Any) -> None:
        super().__init__(*end, **options)
        if anneal_steps < 1:
            raise ValueError(f"anneal_steps must be ≥ 1, got {anneal_steps}")
        self.start_band, self.end_band, self.anneal_steps = tuple(start), tuple(end), anneal_steps

    @torch.no_grad()
    def update(self, mean_entropy: torch.Tensor) -> torch.Tensor:
        """Move the band to this step's place, then the usual update (see ``EntropyController.update``)."""
        t = min(int(self.steps) / self.anneal_steps, 1.0)  # one host read per step: fine for this CPU experiment
        self.h_min, self.h_max = (a + t * (b - a) for a, b in zip(self.start_band, self.end_band, strict=True))
        return super().update(mean_entropy)


#: The methods, in reporting order; each builds ``(augmenter, objective)`` from the config and the number of joint
#: training steps (over which an annealed entropy band moves).
METHODS = MethodRegistry("multimodal")


@METHODS.register("none", "no augmentation")
def _none(config: Config, steps: int = 1) -> tuple[Augmenter, nn.Module]:
    return NoAugment(in_channels=1), TaskObjective()


@METHODS.register("augerino", "one learned rotation interval for every image (Augerino)")
def _augerino(config: Config, steps: int = 1) -> tuple[Augmenter, nn.Module]:
    return Augerino(("rotation",), in_channels=1, width=config.aug_width), AugerinoObjective(config.augerino_weight)


@METHODS.register("uniform", "InstaAug: one learned rotation interval per image")
def _uniform(config: Config, steps: int = 1) -> tuple[Augmenter, nn.Module]:
    return _learned(config, "uniform", steps)


@METHODS.register("mixture", "InstaAug with a mixture of intervals per image (several arcs)")
def _mixture(config: Config, steps: int = 1) -> tuple[Augmenter, nn.Module]:
    return _learned(config, "mixture", steps)


@METHODS.register("flow", "InstaAug with a conditional normalizing flow over the rotation angle")
def _flow(config: Config, steps: int = 1) -> tuple[Augmenter, nn.Module]:
    return _learned(config, "flow", steps)


@dataclass(frozen=True)
class Config:
    """Settings of the multimodal experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, … seed + N - 1; or a list of seeds. Each seed's run is the single run at
    #: that seed (its own data, classifiers and training).
    seeds: int | tuple[int, ...] = 1
    #: training images (the three training shapes, up and down: 6 classes).
    n_train: int = 3000
    #: test images of the training shapes, and of the held-out shapes.
    n_test: int = 600
    #: every method's training run (``--set train.KEY=VALUE``; its ``seed`` is the run's): one pre-training epoch
    #: of the classifier, 30 joint ones. φ's learning rate decays to 0 over the joint epochs (cosine), so that φ
    #: settles instead of stopping wherever the λ controller's swings left it. The frozen variant's oracle
    #: classifier, the alignment test's shape classifier and the sampling fit take their batch size and learning
    #: rates from here too (``train.epochs`` is the sampling fit's epochs).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=30, pretrain_epochs=1, batch_size=64, lr=3e-3, aug_lr=3e-3, aug_lr_schedule="cosine"
        )
    )
    methods: tuple[str, ...] = METHODS.names
    #: the entropy band of the InstaAug methods, in nats: a uniform distribution on a set of measure 1.5–2.0 rad,
    #: half to two thirds of the label-preserving set (measure π). The set itself (log 0.9π … log 1.1π) was not
    #: reachable jointly: views near the ends of an arc are as much "up" as "down", the classifier's loss rose as φ
    #: widened towards them, λ kept growing, and φ ran away to the whole circle (entropy log 2π) where the
    #: classifier learns nothing (uniform and mixture alike; seed 1, which these settings were chosen on).
    entropy_range: tuple[float, float] = (0.4, 0.7)
    #: a slow λ controller (×1.005 per step from 0.01) within [lam_min, lam_max]: faster ones overshot the band.
    lam_init: float = 0.01
    lam_rate: float = 1.005
    lam_min: float = 0.001
    #: λ's ceiling: a λ that keeps growing while φ lags behind ends with φ on the whole circle and a classifier
    #: that can no longer learn the orientation (seen at λ ≈ 1.4, seed 1).
    lam_max: float = 1.0
    #: mixture components (2-fold classes need 2 arcs, 3-fold 3, and an arc across ±π splits in two); ignored with
    #: ``mixture_init="symmetric"``, which sets K itself.
    components: int = 4
    #: where the mixture's components start: ``spread`` evenly over [−π, π) (the head's default), or ``symmetric``:
    #: at the identity turned by every multiple of 2π/``symmetry_divisions`` (``symmetric_centres``), the rotations
    #: a shape with n-fold symmetry keeps for every n dividing it. An inductive bias, stated: symmetries of order
    #: 1, 2, 3 or 6. Components that start on a true arc only have to widen; those in the gaps only to lose weight.
    mixture_init: str = "spread"
    symmetry_divisions: int = 6
    #: the initial rotation half-width of the InstaAug methods (0: the family's default, 0.38 rad). For the
    #: flow, a width near π starts it near the uniform density on the circle ("start wide and shrink").
    init_width: float = 0.0
    #: the flow's own initial half-width, overriding ``init_width`` for the flow alone (0: ``init_width``).
    flow_init_width: float = 0.0
    #: anneal the entropy band linearly from ``entropy_start`` to ``entropy_range`` over this many joint epochs
    #: (0: the fixed band ``entropy_range`` from the start). With a wide start, mass then leaves the gaps
    #: gradually instead of having to find the far arcs.
    anneal_epochs: int = 0
    entropy_start: tuple[float, float] = (1.6, 1.84)
    #: views per input (n_copies): with ≥ 2, the mixture's REINFORCE baseline is the leave-one-out mean.
    copies: int = 1
    #: how the flow learns against a frozen classifier: ``objective``, InstaAug's E[L] − λ·H like every other
    #: method, or ``sampling``: fitted by maximum likelihood to the classifier's own Gibbs density
    #: p*(τ | x) ∝ exp(−L(f(τ(x)), y) / ``fit_temperature``), estimated on ``fit_grid`` rotations per image
    #: (``fit_by_sampling``). E[L] − λ·H is λ·KL(p ‖ p*_λ) + const, a mode-seeking divergence: one arc already
    #: satisfies it. The forward KL(p* ‖ p) that maximum likelihood minimises punishes every arc p misses.
    flow_fit: str = "objective"
    #: T = 0.5: at an arc's end a view is as much "up" as "down", a loss of about log 2, which T = 0.5 weighs
    #: exp(−log 2 / 0.5) = 1/4 of the arc's middle: the ``coverage_threshold``. Set a priori, not tuned.
    fit_temperature: float = 0.5
    #: 36 rotations (10°) per image: the narrowest arc (π/3) spans 6 of them.
    fit_grid: int = 36
    #: rotations per image and step of the sampling fit, one drawn uniformly in each of as many equal strata.
    fit_samples: int = 16
    #: samples per input of the flow's Monte Carlo entropy.
    entropy_samples: int = 8
    augerino_weight: float = 0.01
    classifier_width: int = 16
    aug_width: int = 16
    #: rotations on which the learned densities are evaluated.
    grid: int = 720
    #: a rotation counts as covered where the density is at least this × 1/π.
    coverage_threshold: float = 0.25
    #: epochs of the upright-only shape classifier of the alignment test.
    align_epochs: int = 4
    #: train φ alone against a classifier frozen after training on views rotated within each image's true set
    #: (``oracle_copies`` views per image for ``oracle_epochs``): learning the invariances a fixed, pre-trained
    #: classifier already has, instead of training both jointly.
    frozen: bool = False
    oracle_copies: int = 4
    oracle_epochs: int = 6
    #: torch threads per run (0: 1 when runs go to several worker processes, else torch's default).
    threads: int = 0
    #: worker processes, one run (method, seed) each at a time (0: one per available core). The README's figures
    #: were measured in one process (``workers=1``); other thread counts change them by float rounding.
    workers: int = 0
    figure_examples: int = 6
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {k: v for k, v in flat_train_aliases().items() if k in _FLAT_KEYS}

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        check_seeds(self)
        check_int_fields(self, ("workers", "threads"), least=0)
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.mixture_init not in MIXTURE_INITS:
            raise ValueError(f"mixture_init must be one of {MIXTURE_INITS}, got {self.mixture_init!r}")
        if self.flow_fit not in FLOW_FITS:
            raise ValueError(f"flow_fit must be one of {FLOW_FITS}, got {self.flow_fit!r}")
        if self.flow_fit == "sampling" and not self.frozen:
            raise ValueError("flow_fit='sampling' fits the flow to a fixed classifier: it needs frozen=true")
        if self.fit_temperature <= 0 or self.fit_grid < 2 or self.fit_samples < 1:
            raise ValueError(
                f"need fit_temperature > 0, fit_grid ≥ 2 and fit_samples ≥ 1, got {self.fit_temperature}, "
                f"{self.fit_grid}, {self.fit_samples}"
            )

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests."""
        train = dataclasses.replace(cls().train, epochs=1, pretrain_epochs=1)
        # workers=1: starting worker processes would cost more than these tiny runs.
        return cls(n_train=384, n_test=96, train=train, grid=180, align_epochs=1, figure_examples=3, workers=1)


def _learned(config: Config, distribution: str, steps: int) -> tuple[Augmenter, nn.Module]:
    """InstaAug over rotation with ``distribution`` (``uniform``, ``mixture`` or ``flow``) and its controller
    (``steps``: joint training steps, over which an annealed band moves)."""
    width = config.flow_init_width if distribution == "flow" and config.flow_init_width else config.init_width
    symmetric = distribution == "mixture" and config.mixture_init == "symmetric"
    components = config.components
    if symmetric:  # as many components as symmetry candidates (one more when one lies on the ±π seam)
        half = width or FAMILIES["rotation"].init_half_width
        components = symmetric_centres(-math.pi, math.pi, config.symmetry_divisions, half).shape[0]
    aug = InstaAug(
        ("rotation",),
        in_channels=1,
        width=config.aug_width,
        distribution=distribution,
        components=components,
        mixture_init="symmetric" if symmetric else "spread",
        symmetry_divisions=config.symmetry_divisions,
        entropy_samples=config.entropy_samples,
        entropy_range=config.entropy_range,
        init_half_width=(width,) if width else None,
        n_copies=config.copies,
    )
    options: dict[str, Any] = {
        "lam_init": config.lam_init,
        "rate": config.lam_rate,
        "lam_min": config.lam_min,
        "lam_max": config.lam_max,
    }
    controller = (
        AnnealedBand(config.entropy_start, config.entropy_range, max(1, steps), **options)
        if config.anneal_epochs
        else EntropyController(*config.entropy_range, **options)
    )
    return aug, InstaAugObjective(controller)


@torch.no_grad()
def densities(aug: Augmenter, x: torch.Tensor, angles: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The learned density (N, R) of each image of x (N, C, H, W) at the rotations ``angles`` (R,), normalised on
    the grid (a Riemann sum over [−π, π))."""
    aug.eval()
    rows = []
    for xb in x.split(batch):
        dist = aug.distribution(xb)
        values = angles[:, None, None].expand(-1, xb.shape[0], 1).to(xb.dtype)
        rows.append(dist.log_prob(values).exp().T)  # (b, R)
    density = torch.cat(rows)
    step = 2 * math.pi / angles.shape[0]
    return density / (density.sum(1, keepdim=True) * step).clamp_min(1e-12)


def coverage_violation(
    density: torch.Tensor, data: SymmetricShapes, angles: torch.Tensor, threshold: float
) -> dict[str, float]:
    """``coverage`` and ``violation`` (see the module docstring) per symmetry order, and for n ∈ {2, 3}."""
    truth = invariance_mask(angles, data.order, data.tilt)  # (N, R)
    step = 2 * math.pi / angles.shape[0]
    covered = ((density >= threshold / math.pi) & truth).sum(1) / truth.sum(1).clamp_min(1)
    violation = (density * ~truth).sum(1) * step
    out: dict[str, float] = {}
    for name, keep in (
        ("n1", data.order == 1),
        ("n2", data.order == 2),
        ("n3", data.order == 3),
        ("sym", data.order > 1),
        ("all", torch.ones_like(data.order, dtype=torch.bool)),
    ):
        if bool(keep.any()):
            out[f"coverage_{name}"] = float(covered[keep].mean())
            out[f"violation_{name}"] = float(violation[keep].mean())
    return out


def _train_config(config: Config, epochs: int, pretrain: int) -> TrainConfig:
    return dataclasses.replace(config.train, epochs=epochs, pretrain_epochs=pretrain, seed=config.seed)


def alignment(config: Config, augmenters: dict[str, Augmenter], test: SymmetricShapes) -> dict[str, dict[str, float]]:
    """Accuracy of an upright-only shape classifier on the "up" test images, raw and canonicalised by each
    augmenter, and the residual tilt after canonicalisation (radians, modulo the shape's period)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    n = config.n_train // 2
    shape = torch.tensor(TRAIN_SHAPES)[torch.randint(len(TRAIN_SHAPES), (n,), generator=generator)]
    upright = draw(shape, torch.zeros(n), 0.8 + 0.2 * torch.rand(n, generator=generator))
    labels = torch.searchsorted(torch.tensor(TRAIN_SHAPES), shape)
    classifier = _plain_classifier(config, len(TRAIN_SHAPES), upright, labels, config.align_epochs)
    up = test.labels % 2 == 0
    x, y, tilt, order = (
        test.images[up],
        torch.searchsorted(torch.tensor(TRAIN_SHAPES), test.shape[up]),
        test.tilt[up],
        test.order[up],
    )
    period = 2 * math.pi / order

    def accuracy(images: torch.Tensor) -> float:
        return float((predict(classifier, images, device=config.train.device).argmax(-1) == y).float().mean())

    results = {"raw": {"accuracy": accuracy(x), "residual_tilt": float(tilt.abs().mean())}}
    for name, aug in augmenters.items():
        if not isinstance(aug, InstaAug) or name == "augerino":
            continue
        aug.eval()
        with torch.no_grad():
            mode = aug.distribution(x).mode()[:, 0]
        residual = torch.remainder(tilt + mode + period / 2, period) - period / 2
        results[name] = {"accuracy": accuracy(aug.canonicalise(x)), "residual_tilt": float(residual.abs().mean())}
    return results


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train every method for every seed, measure coverage, violation, accuracy and alignment; write metrics.json,
    the densities figure and the augmenters (under ``out_dir/METHOD/``, or ``out_dir/METHOD/seed<S>/`` with several
    seeds)."""
    return run_on_builtin_data("multimodal", _run, config, out_dir, data, uses="shapes it draws itself")


def oracle_views(data: SymmetricShapes, copies: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``copies`` views of every image, each rotated by an angle drawn uniformly from the inner 90% of the image's
    label-preserving arcs: (images (copies·N, 1, H, W), labels (copies·N,), angles (copies·N,))."""
    generator = torch.Generator().manual_seed(seed)
    order = data.order.repeat(copies)
    tilt = data.tilt.repeat(copies)
    period = 2 * math.pi / order
    arc = torch.floor(torch.rand(order.shape, generator=generator) * order)
    offset = (torch.rand(order.shape, generator=generator) * 2 - 1) * 0.9 * period / 4
    angle = torch.remainder(-tilt + arc * period + offset + math.pi, 2 * math.pi) - math.pi
    images = TransformStack(("rotation",))(data.images.repeat(copies, 1, 1, 1), angle[:, None])
    return images, data.labels.repeat(copies), angle


@torch.no_grad()
def grid_losses(classifier: nn.Module, data: SymmetricShapes, angles: torch.Tensor, views: int = 256) -> torch.Tensor:
    """The frozen classifier's loss (N, R) on every image of ``data`` rotated by every angle of ``angles`` (R,),
    about ``views`` rotated images per forward pass."""
    stack = TransformStack(("rotation",))
    rows = []
    batch = max(1, views // angles.shape[0])
    for x, y in zip(data.images.split(batch), data.labels.split(batch), strict=True):
        rotated = stack(x.repeat_interleave(angles.shape[0], 0), angles.repeat(x.shape[0])[:, None])
        loss = nn.functional.cross_entropy(classifier(rotated), y.repeat_interleave(angles.shape[0]), reduction="none")
        rows.append(loss.view(x.shape[0], -1))
    return torch.cat(rows)


def fit_by_sampling(
    aug: InstaAug, images: torch.Tensor, losses: torch.Tensor, config: Config
) -> list[dict[str, float]]:
    """Fit φ's distribution to a frozen classifier's invariances by maximum likelihood (forward KL).

    ``images`` (N, C, H, W) are the training images and ``losses`` (N, G) the classifier's loss on each rotated by
    each of G = ``fit_grid`` angles −π + 2πg/G (``grid_losses``).

    The target for image x is the Gibbs density p*(τ | x) ∝ exp(−L(f(τ(x)), y) / T), T = ``fit_temperature``:
    flat where the classifier keeps the label, ≈ 0 where it does not. The losses on the grid are linearly
    interpolated between grid points. Every step draws S = ``fit_samples`` rotations per image, one uniformly in
    each of S equal strata of the circle, and minimises the self-normalised estimate −Σ_s w_s log p(τ_s | x),
    w = softmax(−L / T) over the S rotations, of the cross-entropy H(p*, p) = KL(p* ‖ p) + const (importance
    sampling with a uniform proposal). Adam at ``train.aug_lr`` with a cosine decay over ``train.epochs``, batches of
    ``train.batch_size``. Returns one dict per epoch (the mean fitted cross-entropy ``fit_loss`` and the distribution's
    Monte Carlo ``entropy`` on the epoch's last batch).
    """
    n, grid = losses.shape
    if images.shape[0] != n:
        raise ValueError(f"{images.shape[0]} images but losses for {n}")
    epochs, batch_size = config.train.epochs, config.train.batch_size
    generator = torch.Generator().manual_seed(config.seed + 3)
    torch.manual_seed(config.seed)
    optimiser = torch.optim.Adam(aug.parameters(), lr=config.train.aug_lr)
    total = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    strata = torch.arange(config.fit_samples) / config.fit_samples  # (S,) in turns
    aug.train()
    history = []
    for epoch in range(epochs):
        started, sums, count = time.perf_counter(), 0.0, 0
        for index in torch.randperm(n, generator=generator).split(batch_size):
            turns = strata + torch.rand(index.shape[0], config.fit_samples, generator=generator) / config.fit_samples
            position = turns * grid  # (b, S) in grid steps from −π
            left = position.floor().long()
            fraction = position - left
            here = losses[index]
            interpolated = (1 - fraction) * here.gather(1, left % grid) + fraction * here.gather(1, (left + 1) % grid)
            weights = torch.softmax(-interpolated / config.fit_temperature, dim=1)  # (b, S)
            rotations = turns * 2 * math.pi - math.pi  # (b, S), in [−π, π)
            dist = aug.distribution(images[index])
            log_p = dist.log_prob(rotations.T[..., None])  # (S, b)
            loss = -(weights.T * log_p).sum(0).mean()
            optimiser_step(loss, optimiser)
            schedule.step()
            sums, count = sums + float(loss.detach()) * index.shape[0], count + index.shape[0]
        with torch.no_grad():
            entropy = float(dist.entropy().mean())
        history.append(
            {"epoch": epoch + 1, "fit_loss": sums / count, "entropy": entropy, "seconds": time.perf_counter() - started}
        )
    return history


def _frozen_classifier(config: Config, data: SymmetricShapes) -> nn.Module:
    """A classifier trained on oracle views (see ``oracle_views``), then frozen."""
    images, labels, _ = oracle_views(data, config.oracle_copies, config.seed + 2)
    model = _plain_classifier(config, 2 * len(TRAIN_SHAPES), images, labels, config.oracle_epochs)
    return model.requires_grad_(False).eval()


def _classifier(config: Config, classes: int) -> nn.Module:
    """The experiment's small CNN for 1-channel images, freshly seeded."""
    torch.manual_seed(config.seed)
    return build_classifier("small_cnn", 1, classes, width=config.classifier_width, depth=3)


def _plain_classifier(
    config: Config, classes: int, images: torch.Tensor, labels: torch.Tensor, epochs: int
) -> nn.Module:
    """``_classifier`` trained on (images, labels) for ``epochs`` without augmentation."""
    model = _classifier(config, classes)
    train(model, NoAugment(in_channels=1), TaskObjective(), (images, labels), _train_config(config, epochs, 0))
    return model


@functools.lru_cache(maxsize=6)
def _shapes(n: int, shapes: tuple[int, ...], seed: int) -> SymmetricShapes:
    """``symmetric_shapes``, kept for this process's next jobs (read-only): drawing is slow (seconds per thousand
    images) and every job of a seed needs the same images (train, test and held-out sets of two seeds fit)."""
    return symmetric_shapes(n, shapes, seed=seed)


def _train_set(config: Config) -> SymmetricShapes:
    """The training images of ``config.seed``."""
    return _shapes(config.n_train, TRAIN_SHAPES, config.seed)


def _test_sets(config: Config) -> tuple[SymmetricShapes, SymmetricShapes]:
    """The test images of the training shapes and those of the held-out shapes, of ``config.seed``."""
    test = _shapes(config.n_test, TRAIN_SHAPES, config.seed + 10_000)
    return test, _shapes(config.n_test, HELD_OUT_SHAPES, config.seed + 20_000)


def _angles(config: Config) -> torch.Tensor:
    """The ``grid`` rotations (R,) on which the learned densities are evaluated: the middles of equal steps."""
    return (torch.arange(config.grid) + 0.5) / config.grid * 2 * math.pi - math.pi


def _frozen_path(config: Config, out: str | os.PathLike, seed: int) -> Path:
    """Where ``_frozen_job`` saves the frozen classifier of ``seed`` (its weights only, as safetensors)."""
    return run_dir(out, "frozen_classifier", seed, config) / "weights.safetensors"


def _frozen_job(job: tuple[Config, int, str]) -> None:
    """Train the frozen classifier of one seed (``_frozen_classifier``) and save it for that seed's runs."""
    config, seed, out = job
    config = dataclasses.replace(config, seed=seed)
    model = _frozen_classifier(config, _train_set(config))
    if is_main_process():  # under torchrun every rank trained the same classifier
        path = _frozen_path(config, out, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def _load_frozen(config: Config, out: str | os.PathLike) -> nn.Module:
    """The frozen classifier ``_frozen_job`` saved for ``config.seed``."""
    model = build_classifier("small_cnn", 1, 2 * len(TRAIN_SHAPES), width=config.classifier_width, depth=3)
    model.load_state_dict(load_tensors(_frozen_path(config, out, config.seed)))
    return model.requires_grad_(False).eval()


def _train_job(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Train and measure one (method, seed); save a learned augmenter to ``run_dir``."""
    config, method, seed, out = job
    config = dataclasses.replace(config, seed=seed)
    train_data = _train_set(config)
    frozen = _load_frozen(config, out) if config.frozen else None
    test, held_out = _test_sets(config)
    if frozen is not None:
        torch.manual_seed(seed)  # φ starts from the run's seed
        model = frozen
    else:
        model = _classifier(config, 2 * len(TRAIN_SHAPES))
    steps_per_epoch = math.ceil(config.n_train / config.train.batch_size)
    aug, objective = METHODS.build(method, config, config.anneal_epochs * steps_per_epoch)
    directory = run_dir(out, method, seed, config)
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    if frozen is not None and method == "flow" and config.flow_fit == "sampling":
        assert isinstance(aug, InstaAug)
        grid = torch.arange(config.fit_grid) * (2 * math.pi / config.fit_grid) - math.pi
        history = fit_by_sampling(aug, train_data.images, grid_losses(frozen, train_data, grid), config)
    elif frozen is None or method != "none":  # a frozen classifier without augmentation has nothing to train
        pretrain = 0 if frozen is not None else config.train.pretrain_epochs
        data = (train_data.images, train_data.labels)
        history = train(
            model, aug, objective, data, _train_config(config, config.train.epochs, pretrain), out_dir=directory
        )
    correct = predict(model, test.images, device=config.train.device).argmax(-1) == test.labels
    metrics: dict[str, Any] = {
        "accuracy": float(correct.float().mean()),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    if method in LEARNED:
        angles, threshold = _angles(config), config.coverage_threshold
        metrics.update(coverage_violation(densities(aug, test.images, angles), test, angles, threshold))
        held = coverage_violation(densities(aug, held_out.images, angles), held_out, angles, threshold)
        metrics.update({f"heldout_{k}": v for k, v in held.items()})
        if history and "entropy" in history[-1]:
            metrics["final_entropy"] = history[-1]["entropy"]
        aug.save(directory)
    return metrics


def _align_job(job: tuple[Config, int, str]) -> dict[str, dict[str, float]]:
    """The alignment test of one seed (``alignment``) on the augmenters its runs saved."""
    config, seed, out = job
    config = dataclasses.replace(config, seed=seed)
    # Loaded before the shape classifier is trained: building a module draws from the global generator, from
    # which the flow's mode then samples.
    augmenters = {m: InstaAug.load(run_dir(out, m, seed, config)) for m in config.methods if m in ALIGNED}
    return alignment(config, augmenters, _test_sets(config)[0])


def _run(config: Config, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    seeds = training_seeds(config.seed, config.seeds)
    started = time.perf_counter()
    options: dict[str, Any] = {"workers": config.workers, "threads": config.threads}
    # Jobs in worker processes: one progress bar over the jobs, none per training run (as ``run_seeds`` does).
    quiet = (
        config
        if config.workers == 1
        else dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))
    )
    per_seed_jobs = [(quiet, seed, str(out)) for seed in seeds]
    if config.frozen:
        run_jobs(
            _frozen_job, per_seed_jobs, progress=config.train.progress, description="frozen classifiers", **options
        )
        barrier()  # under torchrun, rank 0 alone saved them
    runs = run_config_seeds(_train_job, config, config.methods, out, description="multimodal runs", seeds=seeds)
    barrier()  # the same for the augmenters
    aligned = run_jobs(_align_job, per_seed_jobs, progress=config.train.progress, description="alignment", **options)
    per_seed, raw = _merge_alignment(runs.per_seed, seeds, aligned)
    results = {name: summarise_seeds([_without_seed(r) for r in records]) for name, records in per_seed.items()}
    alignment_raw = summarise_seeds([_without_seed(r) for r in raw])
    figure = None
    shown = [m for m in config.methods if m in LEARNED]
    if shown and is_main_process():
        figure = _densities_figure(config, shown, seeds[0], out)
    write_metrics(
        out,
        "multimodal",
        results,
        config,
        figures=[figure.name] if figure else [],
        per_seed=per_seed,
        seconds=round(time.perf_counter() - started, 1),
        alignment_raw=alignment_raw,
        alignment_raw_per_seed=raw,
    )
    return {
        "experiment": "multimodal",
        "methods": results,
        "alignment_raw": alignment_raw,
        "config": dataclasses.asdict(config),
    }


def _without_seed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "seed"}


def _merge_alignment(
    per_seed: dict[str, list[dict[str, Any]]], seeds: tuple[int, ...], aligned: list[dict[str, dict[str, float]]]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each seed's alignment results (``alignment``, in seed order) added to its runs' records as ``canonical_KEY``;
    also the records of the raw (not canonicalised) alignment test, one per seed."""
    raw = []
    for seed, results in zip(seeds, aligned, strict=True):
        for name, values in results.items():
            canonical = {f"canonical_{k}": v for k, v in values.items()}
            if name == "raw":
                raw.append({"seed": seed, **canonical})
            else:
                next(r for r in per_seed[name] if r["seed"] == seed).update(canonical)
    return per_seed, raw


def _densities_figure(config: Config, methods: list[str], seed: int, out: Path) -> Path:
    """The learned densities of ``methods`` (their augmenters at ``seed``) on test images of every order."""
    config = dataclasses.replace(config, seed=seed)
    test = _test_sets(config)[0]
    angles = _angles(config)
    picks = _figure_examples(test, config.figure_examples)
    shown = {m: densities(InstaAug.load(run_dir(out, m, seed, config)), test.images[picks], angles) for m in methods}
    return plot_rotation_densities(
        test.images[picks],
        angles,
        invariance_mask(angles, test.order[picks], test.tilt[picks]),
        shown,
        [f"{SHAPES[int(s)].name} n={int(n)}" for s, n in zip(test.shape[picks], test.order[picks], strict=True)],
        out / "multimodal_densities.png",
    )


def _figure_examples(test: SymmetricShapes, count: int) -> torch.Tensor:
    """Test images spread over the symmetry orders (up to ``count``)."""
    picks = []
    for order in (1, 2, 3):
        picks += (test.order == order).nonzero()[:, 0][: max(1, count // 3)].tolist()
    return torch.tensor(picks[:count])


#: The summary's columns: header, metric and width (one seed).
_COLUMNS = (
    ("acc", "accuracy", 6),
    ("cov sym", "coverage_sym", 8),
    ("viol sym", "violation_sym", 8),
    ("cov n1", "coverage_n1", 7),
    ("held cov", "heldout_coverage_sym", 8),
    ("held viol", "heldout_violation_sym", 9),
    ("aligned", "canonical_accuracy", 8),
)


def summary(metrics: dict[str, Any]) -> str:
    """A table: accuracy, coverage and violation on the symmetric classes (training and held-out shapes),
    alignment accuracy (mean ± std over seeds where there are several)."""
    several = any(m.get("seeds", 1) > 1 for m in metrics["methods"].values())

    def cell(m: dict[str, Any], key: str, width: int) -> str:
        if key not in m:
            return f"{'-':>{width}s}"
        if several:
            return f"{m[key]:.3f} ± {m.get(f'{key}_std', 0.0):.3f}".rjust(width)
        return f"{m[key]:{width}.3f}"

    widths = [width + (8 if several else 0) for _, _, width in _COLUMNS]  # room for " ± 0.000"
    lines = [f"{'method':10s} " + " ".join(f"{c[0]:>{w}s}" for c, w in zip(_COLUMNS, widths, strict=True))]
    for name, m in metrics["methods"].items():
        cells = [cell(m, key, w) for (_, key, _), w in zip(_COLUMNS, widths, strict=True)]
        lines.append(f"{name:10s} {' '.join(cells)}")
    raw = metrics.get("alignment_raw", {})
    if raw:
        lines.append(
            f"upright-only shape classifier on tilted 'up' images: {raw['canonical_accuracy']:.3f} as they are "
            f"(mean tilt {raw['canonical_residual_tilt']:.2f} rad); 'aligned' = after canonicalise"
        )
    return "\n".join(lines)
