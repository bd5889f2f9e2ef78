"""`instaaug run segment`: learned augmentation for segmentation on cluttered digits with per-pixel masks.

Every image of the cluttered digits (``instaaug.data.digits``) has a mask: 1 + the digit's class on its ink, 0 on
the background and the digit-like clutter (11 classes), so the network must find the digit among the fragments and
name it pixel by pixel. A small U-Net is trained with no augmentation, random augmentation and InstaAug over the
same families (by default a learned crop, rotation and brightness); masks follow every sampled view
(``aug(x, targets=...)``) and φ learns from the per-view segmentation loss (soft one-hot targets: exact pathwise
gradients for the rotation and brightness intervals, REINFORCE for the crop).

Metrics per method, mean and standard deviation over the seeds, on the test images (or held-out training images
with ``validation``): ``miou`` (mean IoU over the 11 classes), ``pixel_accuracy``, ``digit_miou`` (mean IoU of the
10 digit classes) and the same with dense test-time augmentation over ``tta_views`` views of the method's own
augmenter (``DenseTTAWrapper``, the input itself among the views, merged by mean logits). Nothing here was tuned
on the test set; the settings below were fixed before the first run.
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
from ..baselines import NoAugment, RandomAugment
from ..data.digits import fit_and_eval_sets
from ..distributed import is_main_process
from ..models import UNet
from ..objective import TaskObjective
from ..plots import plot_segmentation_views
from ..segmentation import confusion_matrix, mean_iou, segmentation_loss
from ..train import TrainConfig, train
from ..tta import DenseTTAWrapper
from ..validation import check_int_fields
from .common import flat_train_aliases, run_on_builtin_data, write_metrics
from .methods import MethodRegistry
from .parallel import check_seeds, run_config_seeds, training_seeds

DESCRIPTION = "learned crop + rotation + brightness for segmenting cluttered digits (U-Net, mIoU) vs random, none"
NUM_CLASSES = 11  # background + 10 digits

#: The methods, in reporting order.
METHODS = MethodRegistry("segment")


@METHODS.register("none", "no augmentation")
def _none(config: Config) -> tuple[Augmenter, nn.Module]:
    return NoAugment(in_channels=1), TaskObjective()


@METHODS.register("random", "random crop, rotation and brightness at the random_* ranges")
def _random(config: Config) -> tuple[Augmenter, nn.Module]:
    ranges: dict[str, Any] = {
        "crop": tuple(config.random_crop),
        "rotation": config.random_rotation,
        "value": config.random_value,
    }
    ranges = {k: v for k, v in ranges.items() if k in config.transforms}
    return RandomAugment(config.transforms, ranges, in_channels=1), TaskObjective()


@METHODS.register("instaaug", "InstaAug: per-image LRP crops with rotation and brightness ranges")
def _instaaug(config: Config) -> tuple[Augmenter, nn.Module]:
    # The band allows each interval between a tenth and all of the random baseline's width: InstaAug spends
    # at most as much augmentation as the baseline, where each input tolerates it, and may nearly switch off
    # a family that hurts; the whole image is a crop candidate because the baseline's crops reach it too.
    widths = {"rotation": 2 * config.random_rotation, "value": 2 * config.random_value}
    aug = InstaAug(
        config.transforms,
        in_channels=1,
        width=config.aug_width,
        depth=4,
        global_crop=True,
        entropy_widths=tuple((k, w / 10, w) for k, w in widths.items() if k in config.transforms),
    )
    return aug, aug.objective()


@dataclass(frozen=True)
class Config:
    """Settings of the segmentation experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, … seed + N - 1; or the seeds themselves (``--set seeds=0,4``). The data are
    #: the same for every seed.
    seeds: int | tuple[int, ...] = 1
    methods: tuple[str, ...] = METHODS.names
    transforms: tuple[str, ...] = ("crop", "rotation", "value")
    n_train: int = 1300
    n_test: int = 497
    #: > 0: train on the first ``n_train - validation`` training images and report on the last ``validation``.
    validation: int = 0
    #: the training run of every method (``--set train.KEY=VALUE``; ``seed`` is set per run). ``pretrain_epochs``:
    #: the U-Net alone on clean images first (the paper's recipe for crops), so that it has learned the digits
    #: before augmentation starts: trained on rotated views from the start it predicted background everywhere
    #: (validation runs, every method with rotation; φ then gets no signal that the rotation hurts).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            pretrain_epochs=10,
            epochs=20,
            batch_size=32,
            lr=3e-3,
            aug_lr=1e-3,
            aug_lr_schedule="cosine",
            channels_last=True,
        )
    )
    unet_width: int = 16
    aug_width: int = 16
    #: the random baseline: crop side in [0.6, 1] of the image, rotation ±0.5 rad, brightness ×(1 ± 0.3).
    random_crop: tuple[float, float] = (0.6, 1.0)
    random_rotation: float = 0.5
    random_value: float = 0.3
    #: where the per-view loss is measured (``segmentation_loss(frame=...)``): ``input``, over the input's pixels
    #: with those a view does not show at the uninformed loss log K, or ``view``, over the view's own pixels (with
    #: which φ learned to show empty background: see the README).
    loss_frame: str = "input"
    tta_views: int = 10
    threads: int = 0
    workers: int = 0
    figure_examples: int = 4
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = flat_train_aliases()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        if isinstance(self.transforms, str):
            object.__setattr__(self, "transforms", tuple(t for t in self.transforms.split(",") if t))
        check_seeds(self)
        check_int_fields(self, ("n_train", "n_test", "tta_views", "unet_width", "aug_width"), least=1)
        check_int_fields(self, ("validation", "workers", "threads"), least=0)
        if self.loss_frame not in ("input", "view"):
            raise ValueError(f"loss_frame must be 'input' or 'view', got {self.loss_frame!r}")
        if self.validation >= self.n_train:
            raise ValueError(f"validation ({self.validation}) must be smaller than n_train ({self.n_train})")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        for method in self.methods:
            METHODS.build(method, self)  # so do the transform names and ranges

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests."""
        train = dataclasses.replace(cls().train, epochs=1)
        return cls(n_train=96, n_test=48, train=train, tta_views=2, workers=1, figure_examples=2)


def _datasets(config: Config) -> tuple[Any, Any]:
    """The training images and the images the metrics are computed on (test, or held-out training images)."""
    return fit_and_eval_sets(config.n_train, config.n_test, config.validation)


def _scores(confusion: torch.Tensor, prefix: str = "") -> dict[str, float]:
    miou, iou = mean_iou(confusion)
    digits = iou[1:]
    return {
        f"miou{prefix}": miou,
        f"digit_miou{prefix}": float(digits[~torch.isnan(digits)].mean()) if (~torch.isnan(digits)).any() else math.nan,
        f"pixel_accuracy{prefix}": float(confusion.diag().sum() / confusion.sum().clamp_min(1)),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, aug: Augmenter, test: Any, views: int, seed: int, batch_size: int = 64, device: str = "cpu"
) -> dict[str, float]:
    """mIoU, digit mIoU and pixel accuracy on whole images, and with dense TTA over ``views`` views of ``aug``."""
    model.eval()
    aug.eval()
    tta = DenseTTAWrapper(model, aug, n_copies=views)
    generator = torch.Generator(device=device).manual_seed(seed)
    plain = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    merged = torch.zeros_like(plain)
    for start in range(0, test.images.shape[0], batch_size):
        x = test.images[start : start + batch_size].to(device)
        masks = test.masks[start : start + batch_size]
        plain += confusion_matrix(model(x).argmax(1, keepdim=True).cpu(), masks, NUM_CLASSES)
        merged += confusion_matrix(tta(x, generator=generator).argmax(1, keepdim=True).cpu(), masks, NUM_CLASSES)
    return {**_scores(plain), **_scores(merged, "_tta")}


def _train_job(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Train and evaluate one (method, seed); save a learned augmenter to ``out/method/seed<seed>``."""
    config, method, seed, out = job
    train_set, test_set = _datasets(config)
    train_config = dataclasses.replace(config.train, seed=seed)
    torch.manual_seed(seed)
    model = UNet(1, NUM_CLASSES, width=config.unet_width)
    aug, objective = METHODS.build(method, config)
    run_dir = Path(out) / method / f"seed{seed}"
    began = time.perf_counter()
    loss = functools.partial(segmentation_loss, frame=config.loss_frame)
    history = train(
        model, aug, objective, (train_set.images, train_set.masks), train_config, out_dir=run_dir, task_loss=loss
    )
    metrics = evaluate(model, aug, test_set, config.tta_views, seed, device=config.train.device)
    metrics["train_seconds"] = time.perf_counter() - began
    if history and "entropy" in history[-1]:
        metrics["final_entropy"] = history[-1]["entropy"]
    if isinstance(aug, InstaAug):
        aug.save(run_dir)
    return metrics


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train every method for every seed; write metrics.json, a figure of learned views and the augmenters."""
    return run_on_builtin_data("segment", _run, config, out_dir, data, uses="its built-in cluttered digits with masks")


def _run(config: Config, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seeds = training_seeds(config.seed, config.seeds)
    runs = run_config_seeds(_train_job, config, config.methods, out, description="segment runs", seeds=seeds)
    results = runs.results
    figures = []
    if "instaaug" in config.methods and is_main_process():
        aug = InstaAug.load(out / "instaaug" / f"seed{config.seed}")
        test_set = _datasets(config)[1]
        k = config.figure_examples
        path = plot_segmentation_views(aug, test_set.images[:k], test_set.masks[:k], out / "segment_views.png")
        figures.append(path.name)
    write_metrics(
        out,
        "segment",
        results,
        config,
        data="builtin cluttered digits with masks"
        + (f"; metrics on the last {config.validation} training images (validation)" if config.validation else ""),
        figures=figures,
        per_seed=runs.per_seed,
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"experiment": "segment", "methods": results, "config": dataclasses.asdict(config)}


def summary(metrics: dict[str, Any]) -> str:
    """A table: mIoU and digit mIoU (mean ± std over seeds), without and with dense TTA."""
    lines = [f"{'method':10s} {'mIoU':>15s} {'mIoU (TTA)':>15s} {'digit mIoU':>11s} {'pixel acc':>10s}"]
    for name, m in metrics["methods"].items():
        lines.append(
            f"{name:10s} {m['miou']:8.3f} ± {m['miou_std']:.3f} {m['miou_tta']:8.3f} ± {m['miou_tta_std']:.3f} "
            f"{m['digit_miou']:11.3f} {m['pixel_accuracy']:10.3f}"
        )
    return "\n".join(lines)
