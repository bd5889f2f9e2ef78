"""`instaaug run contrastive`: SimCLR with views drawn from a learned p(τ; φ(x)) (the InstaAug paper's Table 5, small).

Data: the crop experiment's cluttered digits with larger digits and lighter clutter (digits 14–22 px, 4–8
fragments of 4–6 px on a 48×48 canvas), so that a 32×32 view that keeps the digit is worth learning from. An
encoder is pre-trained with NT-Xent on ``n_unlabelled`` unlabelled renders of the 1300 training digits (other
placements and clutter than the labelled ones) plus the labelled images; then, frozen, it is read out by a linear
probe (logistic regression on standardised features of clean images, resized to the view size) fitted on the
first ``n_probe - validation`` labelled training images, its regularisation C chosen among ``probe_cs`` on the
last ``validation`` of them (never on the test images), separately for the clean and the TTA evaluation. Test
accuracy is reported for the clean image (``probe_accuracy``) and for the mean of the probe's log-probabilities
over ``tta_views`` views drawn from the method's own augmenter (``probe_accuracy_tta``).

Methods (``--set methods=...``), each drawing two views per input:

- ``random-crop``: random crops, side uniform in [min_scale, 1], swept over ``random_min_scales``; every setting is
  reported as ``random-crop-<s>`` and ``random-crop`` is the one with the best held-out TTA accuracy;
- ``random-crop-colour``: random crops (``colour_min_scale``) with random brightness, contrast and flips;
- ``instaaug-global``: crop (LRP), brightness, contrast and flip all learned, without input (one distribution);
- ``instaaug-crop``: the learned crop per input, then fixed random brightness, contrast and flips (the reference
  code's setting);
- ``instaaug``: crop, brightness, contrast and flip all learned per input.

φ's objective (``phi_objective``): ``ours`` (``ContrastiveInstaAugObjective``: the NT-Xent of each input's views
as REINFORCE reward with a running-mean baseline, exact pathwise gradients for the colour intervals, λ from the
entropy controller, in the same step as the encoder) or ``reference`` (the reference code's: each view's own
anchor loss as reward, a quadratic pull towards an entropy target annealed over the run, φ frozen for the first
half).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import Augmenter, InstaAug
from ..baselines import RandomAugment, RandomCrop
from ..compose import Then
from ..contrastive import InstanceContrast, ProjectedEncoder
from ..controller import AnnealedEntropyPull, EntropyController, PartControllers
from ..data.digits import ClutteredDigits, box_coverage, cluttered_digits
from ..distributed import is_main_process
from ..linear_probe import select_readouts
from ..models import ConvBackbone
from ..objective import ContrastiveInstaAugObjective, TaskObjective
from ..plots import plot_colour_ranges, plot_sampled_views
from ..train import TrainConfig, train
from ..validation import check_int_fields
from .common import run_on_builtin_data, write_metrics
from .crop import view_boxes
from .methods import MethodRegistry
from .parallel import best_setting, check_seeds, run_config_seeds, training_seeds
from .views_eval import COVERAGE_THRESHOLD, to_pixel_corners

DESCRIPTION = "contrastive InstaAug: SimCLR with learned views on cluttered digits, linear probe with TTA (Table 5)"

PHI_OBJECTIVES = ("ours", "reference")
#: The learned colour families (the images have one channel: brightness and contrast).
COLOUR = ("value", "contrast")
#: Training time relative to a random crop's (longest first, so that no worker idles at the end).
RELATIVE_COST = {"instaaug": 1.6, "instaaug-global": 1.5, "instaaug-crop": 1.5}


#: The methods, in reporting order; each builds ``(augmenter with two views per input, objective)`` from the config
#: and the steps per epoch (``random-crop`` runs once per ``random_min_scales`` entry, as ``random-crop-<s>``).
METHODS = MethodRegistry("contrastive")


@METHODS.register("random-crop", "SimCLR with random crops of at least the given area", setting=float)
def _random_crop(config: Config, steps_per_epoch: int, setting: float = 0.5) -> tuple[nn.Module, nn.Module]:
    size = (config.view_size, config.view_size)
    return RandomCrop(setting, output_size=size, in_channels=1, n_copies=2), TaskObjective()


@METHODS.register("random-crop-colour", "SimCLR's random recipe: crops, brightness, contrast and flips")
def _random_crop_colour(config: Config, steps_per_epoch: int) -> tuple[nn.Module, nn.Module]:
    ranges = {"crop": (config.colour_min_scale, 1.0), **_colour_ranges(config)}
    size = (config.view_size, config.view_size)
    aug = RandomAugment(("crop", *COLOUR, "flip"), ranges, in_channels=1, n_copies=2, output_size=size)
    return aug, TaskObjective()


@METHODS.register("instaaug-global", "learned crops and colour, one distribution for every image (ablation)")
def _instaaug_global(config: Config, steps_per_epoch: int) -> tuple[nn.Module, nn.Module]:
    learned = _learned(config, ("crop", *COLOUR, "flip"), "global")
    return learned, _phi_objective(learned, config, steps_per_epoch)


@METHODS.register("instaaug-crop", "learned per-image crops, then the random colour recipe")
def _instaaug_crop(config: Config, steps_per_epoch: int) -> tuple[nn.Module, nn.Module]:
    colour = RandomAugment((*COLOUR, "flip"), _colour_ranges(config), in_channels=1)
    learned = _learned(config, ("crop",), "instance")
    return Then(learned, colour.requires_grad_(False)), _phi_objective(learned, config, steps_per_epoch)


@METHODS.register("instaaug", "InstaAug: learned per-image crops, brightness, contrast and flips (Table 5)")
def _instaaug(config: Config, steps_per_epoch: int) -> tuple[nn.Module, nn.Module]:
    learned = _learned(config, ("crop", *COLOUR, "flip"), "instance")
    return learned, _phi_objective(learned, config, steps_per_epoch)


def _phi_objective(learned: InstaAug, config: Config, steps_per_epoch: int) -> nn.Module:
    """φ's objective (``phi_objective``): ours, a controller per part's entropy band, or the reference code's pull
    on the total entropy, its target annealed from the top of the parts' bands to the bottom."""
    if config.phi_objective == "ours":
        return ContrastiveInstaAugObjective(part_controllers(learned, config), reward="group")
    low, high = (sum(band[i] for band in part_bands(learned, config)) for i in (0, 1))
    pull = AnnealedEntropyPull(high, low, max(1, joint_epochs(config) * steps_per_epoch), config.reference_weight)
    return ContrastiveInstaAugObjective(pull, reward="anchor")


@dataclass(frozen=True)
class Config:
    """Settings of the contrastive experiment (override with ``--set key=value``, ``train.KEY=value``)."""

    seed: int = 0
    #: an int N: seeds seed … seed + N - 1; or the seeds themselves (``--set seeds=0,4``). The data are the same
    #: for every seed.
    seeds: int | tuple[int, ...] = 3
    methods: tuple[str, ...] = METHODS.names
    #: unlabelled renders of the training digits (seeds 1, 2, …: other placements and clutter).
    n_unlabelled: int = 4000
    #: labelled training images for the probe (of 1300) and, of those, the last ``validation`` held out to choose C.
    n_probe: int = 1300
    validation: int = 300
    n_test: int = 497
    digit_sizes: tuple[int, int] = (14, 22)
    n_fragments: tuple[int, int] = (4, 8)
    fragment_sizes: tuple[int, ...] = (4, 5, 6)
    view_size: int = 32
    encoder_width: int = 24
    projection_hidden: int = 128
    projection_dim: int = 64
    temperature: float = 0.2
    random_min_scales: tuple[float, ...] = (0.3, 0.5, 0.7)
    #: the random colour recipe's crops: the sweep's best setting on held-out images (0.7: TTA 0.364 against 0.353
    #: for 0.5 and 0.301 for 0.3, mean of 3 seeds).
    colour_min_scale: float = 0.7
    #: random brightness and contrast half-widths, and the flip probability, of the random colour recipe.
    colour_jitter: float = 0.4
    flip_probability: float = 0.5
    phi_objective: str = "ours"
    #: the learned methods' first epochs (of ``train.epochs``) train the encoder on random crops, φ untouched:
    #: with φ's initial crops (uniform over the candidates) the encoder did not learn (batch 256, NT-Xent 6.21
    #: after 3 epochs with φ frozen, chance 6.24; random crops 4.26), so φ had no signal to learn from.
    encoder_warmup_epochs: int = 3
    #: the warm-up's views: random crops of side in [warmup_min_scale, 1], nothing else (on held-out images, seed 0,
    #: 8 epochs: crops alone 0.373 TTA accuracy, with flips 0.320, with brightness and contrast 0.300).
    warmup_min_scale: float = 0.7
    aug_width: int = 16
    levels: tuple[int, ...] = (2,)
    box_scale: float = 1.4
    global_crop: bool = False
    centre_jitter: float = 1.0
    size_jitter: float = 0.1
    #: candidate crops must lie this much inside the image (0.8: the 12 boxes of side 0.64 centred in the middle
    #: half; 0.5 adds 20 boxes mostly outside, on padding and clutter).
    min_inside: float = 0.8
    #: each part of φ's distribution has its own band (a band on the total let φ keep the crops fixed and widen
    #: the colour ranges instead). Crop: the categorical part, nats (e^0.5–e^1.0: 1.6–2.7 effective candidates of
    #: 12). Colour: brightness and contrast intervals between ``colour_widths`` wide each. Flip: nats. The floors of
    #: colour and flip are low because on held-out images random flips and colour jitter cost the probe 5–7 points
    #: here (see ``warmup_min_scale``): φ may turn them (almost) off. How the rest was chosen: see the README.
    crop_entropy_range: tuple[float, float] = (0.5, 1.0)
    colour_widths: tuple[float, float] = (0.1, 0.4)
    flip_entropy_range: tuple[float, float] = (0.05, 0.6931)
    lam_init: float = 0.05
    lam_rate: float = 1.01
    #: the reference objective's pull weight (its target is annealed over the joint epochs from the top of the
    #: parts' summed bands to their bottom).
    reference_weight: float = 1.0
    probe_cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    tta_views: int = 10
    figure_examples: int = 6
    #: torch threads per run (0: 1 when runs go to several worker processes, else torch's default).
    threads: int = 0
    #: worker processes, one run (method, seed) each at a time (0: one per available core).
    workers: int = 0
    device: str = "cpu"
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8, batch_size=128, lr=1e-3, aug_lr=3e-3, aug_lr_schedule="cosine", channels_last=True
        )
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        check_seeds(self)
        check_int_fields(self, ("n_probe", "n_test", "view_size", "encoder_width", "tta_views"), least=1)
        check_int_fields(
            self,
            ("n_unlabelled", "validation", "threads", "workers", "figure_examples", "encoder_warmup_epochs"),
            least=0,
        )
        if not 0 < self.validation < self.n_probe <= 1300:
            raise ValueError(
                f"need 0 < validation < n_probe ≤ 1300, got validation={self.validation}, n_probe={self.n_probe}"
            )
        if self.n_test > 497:
            raise ValueError(f"n_test must be ≤ 497 (the test digits), got {self.n_test}")
        if self.phi_objective not in PHI_OBJECTIVES:
            raise ValueError(f"phi_objective must be one of {PHI_OBJECTIVES}, got {self.phi_objective!r}")
        scales = (*self.random_min_scales, self.colour_min_scale, self.warmup_min_scale)
        if not self.random_min_scales or not all(0 < s <= 1 for s in scales):
            raise ValueError(f"random_min_scales, colour_min_scale, warmup_min_scale must be in (0, 1], got {scales}")
        if not self.probe_cs or not all(c > 0 for c in self.probe_cs):
            raise ValueError(f"probe_cs must be positive numbers, got {self.probe_cs}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.encoder_warmup_epochs >= self.train.epochs and self.train.epochs:
            raise ValueError(
                f"encoder_warmup_epochs ({self.encoder_warmup_epochs}) must be below train.epochs ({self.train.epochs})"
            )
        if self.train.batch_size < 2:
            raise ValueError("train.batch_size must be ≥ 2: NT-Xent needs negatives")
        InstanceContrast(self.temperature)  # a bad temperature fails here, not inside a worker
        for method in self.methods:  # so do the augmenters' keys
            METHODS.build(method, self, 1)

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: little data, a small encoder, one epoch, one seed."""
        return cls(
            seeds=1,
            n_unlabelled=64,
            n_probe=96,
            validation=32,
            n_test=48,
            encoder_width=8,
            random_min_scales=(0.5,),
            tta_views=3,
            probe_cs=(1.0,),
            figure_examples=2,
            workers=1,
            encoder_warmup_epochs=1,
            train=TrainConfig(epochs=2, batch_size=32, lr=1e-3, aug_lr=1e-3, progress=False),
        )


class Encoder(nn.Module):
    """A 4-stage CNN with global average pooling: images (N, 1, H, W) → features (N, 4·width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.backbone = ConvBackbone(1, width, depth=4)
        self.out_channels = self.backbone.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1].mean(dim=(2, 3))


def build_encoder(config: Config) -> ProjectedEncoder:
    """The encoder and its projection head (hidden ``projection_hidden``, output ``projection_dim``)."""
    encoder = Encoder(config.encoder_width)
    return ProjectedEncoder(encoder, encoder.out_channels, config.projection_hidden, config.projection_dim)


def _colour_ranges(config: Config) -> dict[str, Any]:
    """The random colour recipe: brightness and contrast ±``colour_jitter``, flips with ``flip_probability``."""
    return {**{name: config.colour_jitter for name in COLOUR}, "flip": config.flip_probability}


def _learned(config: Config, transforms: tuple[str, ...], mode: str) -> InstaAug:
    return InstaAug(
        transforms,
        in_channels=1,
        mode=mode,
        n_copies=2,
        output_size=(config.view_size, config.view_size),
        phi_size=(48, 48),
        depth=4,
        width=config.aug_width,
        levels=config.levels,
        box_scale=config.box_scale,
        global_crop=config.global_crop,
        centre_jitter=config.centre_jitter,
        size_jitter=config.size_jitter,
        min_inside=config.min_inside,
    )


def joint_epochs(config: Config) -> int:
    """The epochs in which φ takes part (after the encoder's warm-up)."""
    return config.train.epochs - config.encoder_warmup_epochs


def part_bands(aug: InstaAug, config: Config) -> list[tuple[float, float]]:
    """The entropy band of every part of ``aug``'s distribution, in part order (crop, colour intervals, flip)."""
    bands: list[tuple[float, float]] = []
    if "crop" in aug.families:
        low, high = config.crop_entropy_range
        bands.append((low + aug.jitter_entropy, high + aug.jitter_entropy))
    if any(name in aug.families for name in COLOUR):
        bands.append(aug.stack.default_entropy_range({name: config.colour_widths for name in COLOUR}))
    if "flip" in aug.families:
        bands.append(config.flip_entropy_range)
    return bands


def part_controllers(aug: InstaAug, config: Config) -> PartControllers:
    """One entropy controller per part of ``aug``'s distribution, each in its band."""
    bands = part_bands(aug, config)
    return PartControllers([EntropyController(*b, lam_init=config.lam_init, rate=config.lam_rate) for b in bands])


def train_config(config: Config, seed: int, epochs: int) -> TrainConfig:
    """A ``TrainConfig`` of ``epochs`` epochs: ``config.train`` with the seed and device (and, for the reference
    objective, φ frozen for the first half of them)."""
    frozen = epochs // 2 if config.phi_objective == "reference" else config.train.aug_frozen_epochs
    return dataclasses.replace(config.train, epochs=epochs, seed=seed, device=config.device, aug_frozen_epochs=frozen)


@dataclass(frozen=True)
class Data:
    """pretrain (N, 1, 48, 48) unlabelled images; probe and test (images, labels, digit boxes in pixels)."""

    pretrain: torch.Tensor
    probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=8)
def _render(split: str, seed: int, digit_sizes: tuple, n_fragments: tuple, fragment_sizes: tuple) -> ClutteredDigits:
    # Cached: every run of a process (one per method and seed with one worker) uses the same images.
    return cluttered_digits(
        split, seed=seed, digit_sizes=digit_sizes, n_fragments=n_fragments, fragment_sizes=fragment_sizes
    )


def make_data(config: Config) -> Data:
    """The experiment's images, deterministic: labelled = the training digits rendered with seed 0, unlabelled =
    the training digits rendered with seeds 1, 2, …, test = the test digits rendered with seed 0."""
    shape = (tuple(config.digit_sizes), tuple(config.n_fragments), tuple(config.fragment_sizes))
    labelled = _render("train", 0, *shape).subset(0, config.n_probe)
    test = _render("test", 0, *shape).subset(0, config.n_test)
    renders = [_render("train", s, *shape).images for s in range(1, 2 + config.n_unlabelled // 1300)]
    unlabelled = torch.cat(renders)[: config.n_unlabelled]
    return Data(
        torch.cat((unlabelled, labelled.images)),
        (labelled.images, labelled.labels, labelled.boxes),
        (test.images, test.labels, test.boxes),
    )


@torch.no_grad()
def _features(
    model: ProjectedEncoder, aug: nn.Module | None, x: torch.Tensor, config: Config, views: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encoder features of x (N, 1, H, W): clean (aug None: resized to the view size) → (N, D), or ``views`` views
    each → (N, views, D); with views also the views' boxes (N, views, 4) (cx, cy, w, h) in fractions."""
    model.eval()
    # Channels-last: the layout the encoder was trained in (``train.channels_last``), and much the faster on CPU.
    model.to(memory_format=torch.channels_last)
    device = torch.device(config.device)
    generator = torch.Generator(device=device).manual_seed(seed)
    feats, boxes = [], []
    for xb in x.split(256):
        xb = xb.to(device)
        if aug is None:
            size = (config.view_size, config.view_size)
            clean = F.interpolate(xb, size=size, mode="bilinear", align_corners=False)
            feats.append(model.features(clean.contiguous(memory_format=torch.channels_last)).cpu())
            continue
        was_training = aug.training
        aug.eval()
        out = aug(xb, n_copies=views, generator=generator)
        aug.train(was_training)
        images = out.images.contiguous(memory_format=torch.channels_last)
        feats.append(model.features(images).view(xb.shape[0], views, -1).cpu())
        first = aug.first if isinstance(aug, Then) else aug
        boxes.append(view_boxes(first, out.params).view(xb.shape[0], views, 4).cpu())
    return torch.cat(feats), (torch.cat(boxes) if boxes else None)


def linear_probe(model: ProjectedEncoder, aug: nn.Module, data: Data, config: Config, seed: int) -> dict[str, float]:
    """Fit the linear probe (C chosen on the held-out labelled images, clean and TTA separately) and score it on the
    test images; also the test views' object coverage and mean crop side."""
    x, y, _ = data.probe
    fit = x.shape[0] - config.validation
    clean = _features(model, None, x, config, 1, seed)[0]
    held_out_views = _features(model, aug, x[fit:], config, config.tta_views, seed)[0]
    readout, readout_tta, chosen = select_readouts(
        (clean[:fit], y[:fit]), (clean[fit:], held_out_views, y[fit:]), config.probe_cs, seed
    )
    test_x, test_y, test_boxes = data.test
    test_clean = _features(model, None, test_x, config, 1, seed + 1)[0]
    test_views, boxes = _features(model, aug, test_x, config, config.tta_views, seed + 1)
    assert boxes is not None
    corners = to_pixel_corners(boxes.reshape(-1, 4), test_x.shape[-1]).view(*boxes.shape)
    coverage = box_coverage(corners, test_boxes[:, None, :]) >= COVERAGE_THRESHOLD
    return {
        "probe_accuracy": readout.accuracy(test_clean, test_y),
        "probe_accuracy_tta": readout_tta.accuracy(test_views, test_y),
        "probe_val_accuracy": chosen["held_out_accuracy"],
        "probe_val_accuracy_tta": chosen["held_out_accuracy_tta"],
        "probe_c": chosen["c"],
        "probe_c_tta": chosen["c_tta"],
        "object_coverage": float(coverage.float().mean()),
        "mean_crop_scale": float(boxes[..., 2:].mean()),
    }


def _learned_augmenter(aug: nn.Module) -> InstaAug | None:
    if isinstance(aug, Then):
        aug = aug.first
    return aug if isinstance(aug, InstaAug) else None


def _train_job(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Pre-train and probe one (method, seed); save a learned augmenter to ``out/method/seed<seed>``."""
    config, name, seed, out = job
    data = make_data(config)
    torch.manual_seed(seed)
    model = build_encoder(config)
    steps = math.ceil(data.pretrain.shape[0] / config.train.batch_size)
    aug, objective = METHODS.build(name, config, steps)
    run_dir = Path(out) / name / f"seed{seed}"
    ids = torch.arange(data.pretrain.shape[0])
    began = time.perf_counter()
    learned = _learned_augmenter(aug)
    warmup = config.encoder_warmup_epochs if learned is not None else 0
    if warmup:
        # The encoder first learns from random crops: an untrained encoder gives φ no signal, and φ's
        # initial, uniform crop distribution alone teaches the encoder little (see the Config).
        random_views = METHODS.build(f"random-crop-{config.warmup_min_scale}", config, steps)[0]
        warm = dataclasses.replace(train_config(config, seed, warmup), aug_frozen_epochs=0)
        train(
            model,
            random_views,
            TaskObjective(),
            (data.pretrain, ids),
            warm,
            task_loss=InstanceContrast(config.temperature),
        )
    settings = train_config(config, seed + 10_000 if warmup else seed, config.train.epochs - warmup)
    history = train(
        model,
        aug,  # type: ignore[arg-type]
        objective,
        (data.pretrain, ids),
        settings,
        out_dir=run_dir,
        task_loss=InstanceContrast(config.temperature),
    )
    metrics = {"train_seconds": time.perf_counter() - began}
    metrics.update(linear_probe(model, aug, data, config, seed))
    last = history[-1]
    metrics["final_loss"] = last["task_loss"]
    metrics["final_positive_top1"] = last["train_positive_top1"]
    if learned is not None:
        metrics["final_entropy"] = last["entropy"]
        learned.save(run_dir)
    return metrics


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Pre-train and probe every method for every seed; write metrics.json, the figures and the learned augmenters."""
    return run_on_builtin_data("contrastive", _run, config, out_dir, data, uses="its built-in cluttered digits")


def _run(config: Config, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    names = [
        f"random-crop-{s:g}" if m == "random-crop" else m for m in config.methods for s in config.random_min_scales
    ]
    names = list(dict.fromkeys(names))
    started = time.perf_counter()
    seeds = training_seeds(config.seed, config.seeds)
    runs = run_config_seeds(
        _train_job, config, names, out, description="contrastive runs", seeds=seeds, cost=RELATIVE_COST
    )
    results = dict(runs.results)
    random_names = [n for n in names if n.startswith("random-crop-") and n != "random-crop-colour"]
    if random_names:  # the best setting by held-out (training-image) TTA accuracy, never by test accuracy
        best = best_setting(results, random_names, "probe_val_accuracy_tta")
        results["random-crop"] = {**results[best], "min_scale": float(best.rsplit("-", 1)[1])}
    ordered = {m: results[m] for m in METHODS if m in results}
    ordered.update({n: results[n] for n in random_names})
    figures = _figures(config, out) if is_main_process() else []
    write_metrics(
        out,
        "contrastive",
        ordered,
        config,
        data="builtin cluttered digits (14–22 px digits, 4–8 fragments of 4–6 px)",
        figures=figures,
        per_seed=runs.per_seed,
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"methods": ordered}


def _figures(config: Config, out: Path) -> list[str]:
    """Views drawn by each learned augmenter of the first seed, and the per-image learned colour ranges."""
    if not config.figure_examples:
        return []
    test_x, test_y, _ = make_data(config).test
    examples, labels = test_x[: config.figure_examples], [str(int(v)) for v in test_y[: config.figure_examples]]
    figures = []
    for name in ("instaaug", "instaaug-global", "instaaug-crop"):
        if name not in config.methods:
            continue
        aug = InstaAug.load(out / name / f"seed{config.seed}")
        path = plot_sampled_views(aug, examples, out / f"views_{name}.png", labels=labels)
        figures.append(path.name)
        if name == "instaaug":
            low, high = _colour_intervals(aug, examples)
            figures.append(
                plot_colour_ranges(examples, low, high, COLOUR, out / "colour_ranges.png", labels=labels).name
            )
    return figures


@torch.no_grad()
def _colour_intervals(aug: Augmenter, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned brightness and contrast intervals (N, 2) of ``aug`` (eval mode) for images x."""
    aug.eval()
    dist = aug.distribution(x)
    part = next(p for p in getattr(dist, "parts", (dist,)) if hasattr(p, "low"))
    return part.low.cpu(), part.high.cpu()


def summary(metrics: dict[str, Any]) -> str:
    """The probe accuracies per method, mean ± std over seeds."""
    lines = [f"{'method':<22} {'probe':>15} {'probe TTA':>15} {'coverage':>9} {'entropy':>8}"]
    for name, m in metrics["methods"].items():
        entropy = f"{m['final_entropy']:8.2f}" if "final_entropy" in m else f"{'':>8}"
        lines.append(
            f"{name:<22} {m['probe_accuracy']:.3f} ± {m['probe_accuracy_std']:.3f}   "
            f"{m['probe_accuracy_tta']:.3f} ± {m['probe_accuracy_tta_std']:.3f} {m['object_coverage']:9.3f} {entropy}"
        )
    return "\n".join(lines)
