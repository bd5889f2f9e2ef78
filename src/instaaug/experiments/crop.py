"""`instaaug run crop`: learned crops on the built-in cluttered digits (the paper's Tiny-ImageNet result, small).

A small handwritten digit sits among fragments of other digits on a 48×48 canvas, so a crop around the digit
removes the distractors that a full view or a random crop keeps. Methods (``--set methods=...``):

- ``none``: no augmentation; ``random``: random crops, side uniform in [min_scale, 1], swept over
  ``random_min_scales`` (each setting is reported as ``random-<min_scale>``; ``random`` is the best one);
- ``augerino``: one global learned range of translation and zoom (Augerino);
- ``instaaug-uniform``: InstaAug with uniform ranges of translation and zoom per input (w/o LRP);
- ``instaaug-global``, ``instaaug-class``: the LRP crop distribution without input / per class;
- ``instaaug``: the LRP crop distribution per input (location-related parameterisation).

Every method pre-trains the classifier for ``pretrain_epochs`` without augmentation, then trains jointly. Metrics
per method, mean and standard deviation over the seeds: test ``accuracy`` on the full image, ``accuracy_tta``
(mean of logits over ``tta_views`` views sampled from the method's own augmentation), and for every method with
crops ``object_coverage`` (fraction of sampled test views whose crop holds ≥ 90% of the digit's box) and
``mean_crop_scale`` (crop side ÷ image side). The best random setting is chosen by its mean test accuracy with
TTA: a choice that favours the baseline.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..augment import Augmenter, InstaAug
from ..baselines import Augerino, NoAugment, RandomCrop
from ..controller import EntropyController
from ..data.digits import fit_and_eval_sets
from ..distributed import is_main_process
from ..models import build_classifier
from ..objective import AugerinoObjective, InstaAugObjective, TaskObjective
from ..plots import plot_crop_examples
from ..train import TrainConfig, train
from ..validation import check_int_fields
from .common import flat_train_aliases, run_on_builtin_data, write_metrics
from .methods import MethodRegistry
from .parallel import best_setting, check_seeds, run_config_seeds, training_seeds
from .views_eval import ViewSource, evaluate_views, full_views, sampled_views

DESCRIPTION = "learned crops (LRP) on built-in cluttered digits vs random crops and ablations; Figure 6"

#: The uniform-range methods crop by translating and zooming.
UNIFORM_TRANSFORMS = ("translation", "scale")
#: Training time of a method relative to a random crop's (default run, 1 thread each; 1 where absent): the runs
#: are started longest first, so that no worker is left with a long run while the others idle at the end.
RELATIVE_COST = {"instaaug-uniform": 1.5, "instaaug": 1.5, "augerino": 1.1}
NUM_CLASSES = 10


#: The methods, in reporting order (``random`` runs once per ``random_min_scales`` entry, as ``random-<scale>``).
METHODS = MethodRegistry("crop")


@METHODS.register("none", "the full image, no augmentation")
def _none(config: Config, num_classes: int) -> tuple[Augmenter, nn.Module]:
    return NoAugment(in_channels=1), TaskObjective()


@METHODS.register("random", "random crops of at least the given area (random-<min_scale>)", setting=float)
def _random(config: Config, num_classes: int, setting: float = 0.85) -> tuple[Augmenter, nn.Module]:
    return RandomCrop(setting, in_channels=1), TaskObjective()


@METHODS.register("augerino", "one learned translation and zoom range for every image (Augerino)")
def _augerino(config: Config, num_classes: int) -> tuple[Augmenter, nn.Module]:
    return Augerino(UNIFORM_TRANSFORMS, in_channels=1), AugerinoObjective(config.augerino_weight)


@METHODS.register("instaaug-uniform", "InstaAug without LRP: per-image uniform translation and zoom ranges")
def _instaaug_uniform(config: Config, num_classes: int) -> tuple[Augmenter, nn.Module]:
    # φ at the images' own 48×48, as when the results in the README were measured (the default would be 32).
    aug = InstaAug(
        UNIFORM_TRANSFORMS, in_channels=1, width=config.aug_width, n_copies=config.n_copies, phi_size=(48, 48)
    )
    band = config.uniform_entropy_range
    controller = EntropyController(*band, lam_init=config.uniform_lam_init, rate=config.uniform_lam_rate)
    return aug, InstaAugObjective(controller)


def _lrp(mode: str) -> Callable[[Config, int], tuple[Augmenter, nn.Module]]:
    """The builder of the LRP crop method with φ's ``mode``: per image, one for all, or one per class."""

    def build(config: Config, num_classes: int) -> tuple[Augmenter, nn.Module]:
        aug = InstaAug(
            ("crop",),
            phi_size=(48, 48),
            in_channels=1,
            levels=config.levels,
            box_scale=config.box_scale,
            global_crop=config.global_crop,
            depth=4,
            width=config.aug_width,
            mode=mode,
            num_classes=num_classes,
            n_copies=config.n_copies,
            entropy_range=config.entropy_range,
            centre_jitter=config.centre_jitter,
            size_jitter=config.size_jitter,
        )
        if config.fixed_lam > 0:
            return aug, InstaAugObjective(lam=config.fixed_lam)
        band = tuple(h + aug.jitter_entropy for h in aug.entropy_range)
        controller = EntropyController(*band, lam_init=config.lam_init, rate=config.lam_rate, lam_min=config.lam_min)
        return aug, InstaAugObjective(controller)

    return build


METHODS.register("instaaug-global", "LRP crops, one learned distribution for every image (ablation)")(_lrp("global"))
METHODS.register("instaaug-class", "LRP crops, one learned distribution per class (ablation)")(_lrp("class"))
METHODS.register("instaaug", "InstaAug: per-image LRP crop distributions (the paper's method)")(_lrp("instance"))


@dataclass(frozen=True)
class Config:
    """Settings of the crop experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, … seed + N - 1; or the seeds themselves (``--set seeds=0,4``). The data are
    #: the same for every seed.
    seeds: int | tuple[int, ...] = 3
    methods: tuple[str, ...] = METHODS.names
    n_train: int = 1300
    n_test: int = 497
    #: > 0: train on the first ``n_train - validation`` training images and report every metric on the last
    #: ``validation`` of them instead of the test set, to choose settings without looking at the test set.
    validation: int = 0
    #: every method's training run (``--set train.KEY=VALUE``; ``seed`` is set per run). Batch 32 rather than 64:
    #: twice the steps for the same compute lifted both random crops (0.856 → 0.896) and instaaug (0.866 → 0.894)
    #: in held-out runs (``validation=300``, 3 seeds). φ's rate decays to 0 (cosine): with a constant rate the LRP
    #: entropy kept swinging between about 0.5 and 2 nats as λ moved (measured at 3e-4 and 6e-4), so the run ended
    #: wherever the swing was. Channels-last convolution weights: a training step here took 0.63–0.65× the time
    #: (``instaaug bench``).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=24,
            pretrain_epochs=3,
            batch_size=32,
            lr=3e-3,
            aug_lr=1e-3,
            aug_lr_schedule="cosine",
            channels_last=True,
        )
    )
    classifier_width: int = 20
    #: LRP: stages of φ's 4-stage CNN whose units propose crops (stage 2: 6×6 cells, receptive field 22 px).
    levels: tuple[int, ...] = (2,)
    #: boxes 1.4 × the 22 px receptive field (31 px, 0.64 of the image): 6.4 of the 32 candidates hold ≥ 90% of
    #: the digit on average, at least 3 for every image (1.2: 4.4 and 2; 1.6: 9.1 and 3). Over 3 seeds, 1.6 gave
    #: coverage 0.90 but TTA accuracy only 0.7 points above random crops; 1.4 gave 1.8 points and coverage 0.898.
    box_scale: float = 1.4
    #: No whole-image candidate: with it, φ collapsed onto the full view the pre-trained classifier knew best.
    global_crop: bool = False
    #: LRP: jitter each crop's centre within this fraction of its cell, and its side by a factor in
    #: [1 - size_jitter, 1 + size_jitter] (0: none). ``entropy_range`` then bounds the categorical part: the band
    #: is shifted by the jitter's entropy. Held-out runs (``validation=300``, 3 seeds; TTA accuracy / coverage):
    #: no jitter 0.894 / 0.886, centre 0.5 0.920 / 0.885, centre 1.0 and size 0.1 0.914 / 0.905.
    centre_jitter: float = 1.0
    size_jitter: float = 0.1
    aug_width: int = 16
    #: one view per input (REINFORCE with a running-mean baseline): 2 views with a leave-one-out baseline gave no
    #: better crops in trial runs and cost twice the classifier passes.
    n_copies: int = 1
    #: about 2–3 effective crops, fewer than the candidates that hold ≥ 90% of a digit (at least 3 per image).
    #: Chosen on training images (boxes 1.6): (1.0, 1.5) left 13% of φ's mass on crops that miss the digit,
    #: (0.6, 1.0) 8%.
    entropy_range: tuple[float, float] = (0.6, 1.0)
    #: the LRP methods' λ controller: it starts near the λ at which the entropy settled in trial runs, moves
    #: slowly (×1.005 per step) and never goes below ``lam_min``: at ×1.02 per step from λ = 0.2, λ fell to 0.03
    #: while φ was still near uniform, then had to climb ×10 when the entropy fell through the band (overshoot).
    lam_init: float = 0.25
    lam_rate: float = 1.005
    lam_min: float = 0.1
    #: > 0: the LRP methods use this fixed λ instead of the controller (the paper's Figure E.1 ablation).
    fixed_lam: float = 0.0
    uniform_lam_init: float = 0.2
    uniform_lam_rate: float = 1.02
    uniform_entropy_range: tuple[float, float] = (-4.0, -3.0)
    augerino_weight: float = 0.01
    #: 0.5 was 7–9 points below 0.85 in every trial (and 4 in the issue author's calibration); left out for time.
    random_min_scales: tuple[float, ...] = (0.7, 0.85, 0.92)
    tta_views: int = 10
    #: torch threads per run (0: 1 when runs go to several worker processes, else torch's default).
    threads: int = 0
    #: worker processes, one run (method, seed) each at a time (0: one per available core).
    workers: int = 0
    figure_examples: int = 6
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = flat_train_aliases()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        check_seeds(self)
        check_int_fields(self, ("validation", "workers", "threads"), least=0)
        if not (isinstance(self.fixed_lam, int | float) and math.isfinite(self.fixed_lam) and self.fixed_lam >= 0):
            raise ValueError(f"fixed_lam must be a finite number ≥ 0, got {self.fixed_lam!r}")
        if self.validation >= self.n_train:
            raise ValueError(f"validation ({self.validation}) must be smaller than n_train ({self.n_train})")
        if not self.random_min_scales or not all(0 < s <= 1 for s in self.random_min_scales):
            raise ValueError(f"random_min_scales must be fractions in (0, 1], got {self.random_min_scales}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if {"instaaug", "instaaug-global", "instaaug-class"} & set(self.methods):
            METHODS.build("instaaug", self, NUM_CLASSES)  # so do the LRP keys (box_scale, jitter, ...)

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: little data, few epochs, one seed."""
        return cls(
            seeds=1,
            n_train=128,
            n_test=64,
            train=dataclasses.replace(cls().train, epochs=1, pretrain_epochs=1),
            random_min_scales=(0.5, 0.85),
            tta_views=4,
            figure_examples=3,
            workers=1,  # starting worker processes would cost more than these tiny runs
        )


def view_boxes(aug: Augmenter, params: torch.Tensor) -> torch.Tensor:
    """The region of the input each view shows, as boxes (N, 4) (cx, cy, w, h) in fractions of the image.

    Crop augmenters' params are those boxes; translation t and log-zoom s show the box centred at 0.5 - t·e^(-s)
    with side e^(-s); no augmentation shows the whole image.
    """
    if "crop" in aug.families:
        return params[:, aug.stack.columns("crop")]
    if isinstance(aug, NoAugment):
        return params.new_tensor([0.5, 0.5, 1.0, 1.0]).expand(params.shape[0], 4)
    shift, log_zoom = params[:, :2], params[:, 2:3]
    side = torch.exp(-log_zoom)
    return torch.cat((0.5 - shift * side, side, side), dim=1)


def evaluate(
    model: nn.Module,
    aug: Augmenter,
    test: Any,
    views: int,
    seed: int,
    batch_size: int = 128,
    device: str = "cpu",
) -> dict[str, float]:
    """Accuracy on full images, accuracy with ``views``-view TTA, object coverage and mean crop scale of the views
    (``views_eval.evaluate_views``, the evaluator the tta experiment uses too)."""
    aug.eval()
    full = ViewSource(1, full_views, {"full": 1})
    drawn = ViewSource(views, sampled_views(aug, views, boxes=lambda params: view_boxes(aug, params)), {"tta": views})
    whole = evaluate_views([model], full, test, seed, batch_size, device)["full"]
    tta = evaluate_views([model], drawn, test, seed, batch_size, device)["tta"]
    return {
        "accuracy": whole["accuracy"][0],
        "accuracy_tta": tta["accuracy"][0],
        "object_coverage": tta["object_coverage"],
        "mean_crop_scale": tta["mean_crop_scale"],
    }


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train every method for every seed, write metrics.json, the crop figure and the learned augmenters."""
    return run_on_builtin_data("crop", _run, config, out_dir, data, uses="its built-in cluttered digits")


def _datasets(config: Config) -> tuple[Any, Any]:
    """The training images and the images the metrics are computed on (test, or held-out training images)."""
    return fit_and_eval_sets(config.n_train, config.n_test, config.validation)


def _train_job(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Train and evaluate one (method, seed); save a learned augmenter to ``out/method/seed<seed>``."""
    config, name, seed, out = job
    train_set, test_set = _datasets(config)
    train_config = dataclasses.replace(config.train, seed=seed)
    torch.manual_seed(seed)
    model = build_classifier("small_cnn", 1, NUM_CLASSES, width=config.classifier_width, depth=4)
    aug, objective = METHODS.build(name, config, NUM_CLASSES)
    run_dir = Path(out) / name / f"seed{seed}"
    began = time.perf_counter()
    history = train(model, aug, objective, (train_set.images, train_set.labels), train_config, out_dir=run_dir)
    metrics = evaluate(model, aug, test_set, config.tta_views, seed, device=config.train.device)
    metrics["train_seconds"] = time.perf_counter() - began
    if history and "entropy" in history[-1]:
        metrics["final_entropy"] = history[-1]["entropy"]
    if isinstance(aug, InstaAug):
        aug.save(run_dir)
    return metrics


def _run(config: Config, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    names = [f"random-{s:g}" if m == "random" else m for m in config.methods for s in config.random_min_scales]
    names = list(dict.fromkeys(names))  # every method once, random once per setting
    started = time.perf_counter()
    seeds = training_seeds(config.seed, config.seeds)
    runs = run_config_seeds(_train_job, config, names, out, description="crop runs", seeds=seeds, cost=RELATIVE_COST)
    results = dict(runs.results)
    random_names = [n for n in names if n.startswith("random-")]
    if random_names:
        # By TTA accuracy on the images the metrics are computed on: the test set unless ``validation`` > 0 (then
        # the held-out training images); the README says so where it reports test figures.
        best = best_setting(results, random_names, "accuracy_tta")
        results["random"] = {**results[best], "min_scale": float(best.split("-", 1)[1])}
    ordered = {m: results[m] for m in METHODS if m in results}
    ordered.update({n: results[n] for n in random_names})
    figures = []
    if "instaaug" in names and is_main_process():  # under torchrun, rank 0 alone saved the augmenter
        kept_aug = InstaAug.load(out / "instaaug" / f"seed{config.seed}")
        test_set = _datasets(config)[1]
        k = config.figure_examples
        figures.append(plot_crop_examples(kept_aug, test_set.images[:k], test_set.boxes[:k], out / "crops.png").name)
    write_metrics(
        out,
        "crop",
        ordered,
        config,
        data="builtin cluttered digits"
        + (f"; metrics on the last {config.validation} training images (validation)" if config.validation else ""),
        figures=figures,
        per_seed=runs.per_seed,
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"experiment": "crop", "methods": ordered, "config": dataclasses.asdict(config)}


def summary(metrics: dict[str, Any]) -> str:
    """A table: accuracy and TTA accuracy (mean ± std over seeds), object coverage, mean crop scale."""
    lines = [f"{'method':18s} {'accuracy':>15s} {'accuracy (TTA)':>15s} {'coverage':>9s} {'scale':>6s}"]
    for name, m in metrics["methods"].items():
        label = f"{name} ({m['min_scale']:g})" if "min_scale" in m else name
        lines.append(
            f"{label:18s} {m['accuracy']:8.3f} ± {m['accuracy_std']:.3f} {m['accuracy_tta']:8.3f} ± "
            f"{m['accuracy_tta_std']:.3f} {m['object_coverage']:9.3f} {m['mean_crop_scale']:6.3f}"
        )
    return "\n".join(lines)
