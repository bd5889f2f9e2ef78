"""``instaaug fit``: train a model and φ jointly on the user's own data (the paper's joint training, Section 5.1).

The user gives data (an image folder, the Tiny-ImageNet layout or an npz; see ``instaaug.userdata``), a model (a
built-in name or ``package.module:callable``; see ``instaaug.usermodel``), the families to augment with and a
method: ``instaaug`` (learned, input-dependent), ``random`` (fixed ranges), ``augerino`` (one learned global range)
or ``none``. The run writes, into its output directory:

* ``model.safetensors`` (the trained model's state dict) and ``augmenter/`` (``Augmenter.load`` reads it back);
* ``metrics.jsonl`` (one line per epoch, with validation metrics), ``metrics.json`` (the final validation metrics
  without and with test-time augmentation, the loader's and the training step's images/s, the config and the
  provenance), ``checkpoint.safetensors`` (``--resume`` continues from it);
* figures of what was learned on validation images: ``views.png`` (sampled views), ``ranges.png`` (per-image
  intervals of the interval families) and ``crops.png`` (crop densities), where they apply.

Classification reports accuracy; regression (the paper's Appendix C.1: squared-error loss) R², MAE and RMSE.
Validation data are never used to choose anything here: they are only measured.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import Augmenter, InstaAug
from .baselines import Augerino, NoAugment, RandomAugment
from .contrastive import InstanceContrast
from .distributions import Product, UniformRanges
from .fit_contrastive import CONTRASTIVE_METHODS, run_contrastive_fit
from .io import save_tensors, write_json
from .objective import AugerinoObjective, TaskObjective
from .plots import plot_colour_ranges, plot_crop_examples, plot_sampled_views
from .provenance import provenance
from .step import squared_error_per_view
from .train import TrainConfig, train
from .transforms import DISCRETE_FAMILIES
from .tta import TTAWrapper
from .userdata import (
    TASKS,
    Split,
    UserData,
    UserRunConfig,
    default_workers,
    load_run_data,
    loader_throughput,
    regression_metrics,
)
from .usermodel import build_model_with_weights
from .validation import check_positive_int

METHODS = ("instaaug", "random", "augerino", "none")
FIT_TASKS = (*TASKS, "contrastive")
MODEL_FILE = "model.safetensors"
AUGMENTER_DIR = "augmenter"


@dataclass(frozen=True)
class FitConfig(UserRunConfig):
    """Settings of ``instaaug fit`` (``--set key=value``; the training keys as ``train.KEY=VALUE``): the shared
    keys of ``UserRunConfig`` and these."""

    #: classification (cross-entropy; accuracy), regression (squared error; R², MAE) or contrastive (SimCLR with
    #: two views per image, labels unused; a linear probe measures the features when there are classes).
    task: str = "classification"
    #: regression targets: a CSV 'file,<target>,...' beside the folder (default DATA/targets.csv), or the npz key.
    targets: str = ""
    #: instaaug (learned per input), random (fixed ranges), augerino (one learned global range), none.
    method: str = "instaaug"
    #: random: per family a half-width or [low, high] (JSON), e.g. {"rotation": 0.5, "crop": [0.5, 1]}.
    random_ranges: dict[str, Any] = field(default_factory=dict)
    #: Augerino's regularisation weight c (loss − c·‖width‖).
    augerino_weight: float = 0.01
    #: contrastive: the model's output size (its features) and NT-Xent's temperature.
    feature_dim: int = 128
    temperature: float = 0.2
    #: the training loop's settings (the crop recipe's φ learning rate 1e-3 with cosine decay by default).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, pretrain_epochs=1, aug_lr=1e-3, aug_lr_schedule="cosine")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.task not in FIT_TASKS:
            raise ValueError(f"task must be one of {FIT_TASKS}, got {self.task!r}")
        if self.task == "contrastive" and self.method not in CONTRASTIVE_METHODS:
            raise ValueError(f"--task contrastive needs a method of {CONTRASTIVE_METHODS}, got {self.method!r}")
        check_positive_int(self.feature_dim, "feature_dim")
        InstanceContrast(self.temperature)  # a bad temperature fails here
        if not isinstance(self.random_ranges, dict):
            raise ValueError(f"random_ranges must be a JSON object, got {self.random_ranges!r}")
        if not self.augment and self.method != "none":
            raise ValueError("augment must name at least one transform family (or use method none)")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    @classmethod
    def quick(cls, **overrides: Any) -> FitConfig:
        """A short check that everything runs (seconds on small data): 1 joint epoch, TTA with 1 and 4 views."""
        return cls(
            **{"tta_views": (1, 4), "train": TrainConfig(epochs=1, aug_lr=1e-3, aug_lr_schedule="cosine"), **overrides}
        )


#: The papers' full-scale recipes: config keys (``train`` as a dict of TrainConfig keys).
PRESETS: dict[str, dict[str, Any]] = {
    # Table 1 (Tiny-ImageNet, 64 px): PreAct ResNet-18, SGD lr 0.2, momentum 0.9, wd 1e-4, batch 100, 10 epochs
    # without augmentation then joint training to 150; φ Adam 1e-5 with warm-up; LRP over 16×16 and 8×8 cells of
    # φ at 64 px plus the whole image; entropy band [3.0, 3.5]; 50-view TTA. The paper: 61.47 ± 0.24 top-1
    # (random crop 57.75); ours is not measured at this scale yet.
    "tiny-imagenet-crop": {
        "model": "preact_resnet18",
        "image_size": 64,
        "augment": ("crop",),
        "method": "instaaug",
        "augment_options": {"phi_size": [64, 64], "levels": [1, 2], "global_crop": True, "entropy_range": [3.0, 3.5]},
        "tta_views": (1, 10, 50),
        "train": {
            "optimizer": "sgd",
            "lr": 0.2,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "batch_size": 100,
            "pretrain_epochs": 10,
            "epochs": 140,
            "aug_lr": 1e-5,
            "aug_lr_schedule": "constant",
            "aug_lr_warmup_epochs": 10,
        },
    },
}


def apply_preset(config: FitConfig, name: str, presets: dict[str, dict[str, Any]] = PRESETS) -> FitConfig:
    """``config`` with the preset's keys (its ``train`` dict merged into ``config.train``)."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(presets)}")
    values = dict(presets[name])
    train_values = values.pop("train", {})
    return dataclasses.replace(config, **values, train=dataclasses.replace(config.train, **train_values))


def build_augmenter(
    method: str,
    families: tuple[str, ...],
    *,
    channels: int,
    num_classes: int | None,
    augment_options: dict[str, Any],
    random_ranges: dict[str, Any],
    augerino_weight: float,
) -> tuple[Augmenter, nn.Module]:
    """The augmenter and objective of a method, with the library's tuned defaults and the user's options."""
    if method == "none":
        return NoAugment(in_channels=channels), TaskObjective()
    if method == "random":
        ranges = {k: tuple(v) if isinstance(v, list) else v for k, v in random_ranges.items()}
        return RandomAugment(families, ranges or None, in_channels=channels), TaskObjective()
    if method == "augerino":
        interval = [f for f in families if f not in DISCRETE_FAMILIES]
        if len(interval) != len(families):
            raise ValueError(f"augerino learns interval families only; drop {sorted(set(families) - set(interval))}")
        return Augerino(families, in_channels=channels), AugerinoObjective(augerino_weight)
    options = {"in_channels": channels, **augment_options}
    if options.get("mode") == "class":
        if num_classes is None:
            raise ValueError("mode 'class' needs class labels; it does not apply to regression")
        options.setdefault("num_classes", num_classes)
    aug = InstaAug(families, **options)
    return aug, aug.objective()


@torch.no_grad()
def predict_outputs(
    model: nn.Module,
    split: Split,
    device: torch.device,
    *,
    wrapper: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(outputs (N, K), targets, seconds) of ``model`` (or of ``wrapper``, e.g. a TTA ensemble) over a split."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    started = time.perf_counter()
    try:
        for x, y in split.batches(batch_size, workers=workers):
            x = x.to(device, non_blocking=True)
            outputs.append((wrapper or model)(x).float().cpu())
            targets.append(y)
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(targets), time.perf_counter() - started


def score(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> dict[str, float]:
    """Classification: accuracy and cross-entropy; regression: R², MAE and RMSE."""
    if task == "regression":
        return regression_metrics(outputs, targets)
    return {
        "accuracy": float((outputs.argmax(-1) == targets).float().mean()),
        "loss": float(F.cross_entropy(outputs, targets)),
    }


def check_model_output(model: nn.Module, data: UserData, device: torch.device) -> None:
    """A clear error now, rather than a shape error deep in training, when the model's outputs do not fit."""
    x = data.train.spread(2)[0].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"the model fails on {tuple(x.shape)} images: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != data.outputs:
        what = "classes" if data.task == "classification" else "regression targets"
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model returns {shape} for 2 images; expected (2, {data.outputs}) for {data.outputs} {what}"
        )


def save_figures(aug: Augmenter, data: UserData, out: Path, device: torch.device, seed: int) -> list[str]:
    """Figures of what the augmenter does on the first validation images; returns the files written."""
    images, targets = data.val.spread(8)
    images = images.to(device)
    labels = None
    if data.task == "classification":
        labels = [data.class_names[int(c)][:14] for c in targets]
    written = [plot_sampled_views(aug, images, out / "views.png", labels=labels, seed=seed).name]
    if isinstance(aug, InstaAug) and aug.head is not None:  # learned intervals (Augerino's are global)
        with torch.no_grad():
            dist = aug.eval().distribution(images)
        ranges = dist.part(UniformRanges) if isinstance(dist, Product) else dist
        if isinstance(ranges, UniformRanges):
            low, high, names = ranges.low.cpu(), ranges.high.cpu(), aug.interval_names
            written.append(plot_colour_ranges(images.cpu(), low, high, names, out / "ranges.png", labels=labels).name)
    if isinstance(aug, InstaAug) and aug.config.has_crop:
        written.append(plot_crop_examples(aug, images[:6], None, out / "crops.png", seed=seed).name)
    return written


def run_fit(config: FitConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Train and measure as the module docstring says; returns the metrics written to ``metrics.json``."""
    if config.task == "contrastive":
        return run_contrastive_fit(config, out_dir)
    out = Path(out_dir)
    torch.manual_seed(config.train.seed)
    data = load_run_data(config, config.train.seed, task=config.task, targets=config.targets)
    device = distributed.local_device(config.train.device)
    model = build_model_with_weights(
        config.model,
        config.weights,
        in_channels=data.channels,
        outputs=data.outputs,
        args=config.model_args,
        input_norm=config.input_norm,
    ).to(device)
    check_model_output(model, data, device)
    aug, objective = build_augmenter(
        config.method,
        config.augment,
        channels=data.channels,
        num_classes=data.outputs if data.task == "classification" else None,
        augment_options=config.augment_options,
        random_ranges=config.random_ranges,
        augerino_weight=config.augerino_weight,
    )
    workers = default_workers() if config.workers < 0 else config.workers
    batches = data.train.training_batches(
        config.train.batch_size, workers=workers, device=device, seed=config.train.seed
    )
    loader_rate = loader_throughput(batches)

    def evaluate(epoch: int) -> dict[str, float]:
        outputs, targets, _ = predict_outputs(model, data.val, device, workers=workers)
        return {f"val_{k}": v for k, v in score(outputs, targets, data.task).items()}

    task_loss = squared_error_per_view if data.task == "regression" else None
    history = train(
        model, aug, objective, batches, config.train, out_dir=out, evaluate_fn=evaluate, task_loss=task_loss
    )
    model.eval()
    aug.eval()
    results: dict[str, dict[str, float]] = {}
    outputs, targets, seconds = predict_outputs(model, data.val, device, workers=workers)
    results["none"] = {**score(outputs, targets, data.task), "seconds_per_image": seconds / len(data.val)}
    if config.method != "none":
        merge = "mean" if data.task == "regression" else "logits"  # of the outputs: logits or predicted values
        for n in config.tta_views:
            torch.manual_seed(config.train.seed)  # every entry draws its views from the same seed
            ensemble = TTAWrapper(model, aug, n, merge=merge)
            outputs, targets, seconds = predict_outputs(model, data.val, device, wrapper=ensemble, workers=workers)
            results[f"tta-n{n}"] = {**score(outputs, targets, data.task), "seconds_per_image": seconds / len(data.val)}
    joint = [r for r in history if r.get("phase") == "joint"] or history
    train_rate = len(data.train) / joint[-1]["seconds"] if joint else float("nan")
    metrics: dict[str, Any] = {
        "command": "fit",
        "task": data.task,
        "method": config.method,
        "val": results,
        "history": history,
        "loader_images_per_second": loader_rate,
        "train_images_per_second": train_rate,
        "classes" if data.task == "classification" else "targets": list(data.class_names),
        "config": dataclasses.asdict(config),
        "provenance": provenance(seed=config.train.seed, device=str(device), data=data.source),
    }
    if distributed.is_main_process():
        save_tensors(out / MODEL_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        aug.save(out / AUGMENTER_DIR)
        metrics["figures"] = save_figures(aug, data, out, device, config.train.seed)
        write_json(out / "metrics.json", metrics)
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    """A short table of the validation results of ``run_fit`` (or ``run_tta``)."""
    lines = []
    for name, values in metrics["val"].items():
        main = {k: v for k, v in values.items() if k in ("accuracy", "r2", "mae")}
        cells = "  ".join(f"{k} {v:.4f}" for k, v in main.items())
        lines.append(f"{name:16s} {cells}  ({1000 * values['seconds_per_image']:.2f} ms/image)")
    if "loader_images_per_second" in metrics:
        lines.append(
            f"loader {metrics['loader_images_per_second']:.0f} images/s, training "
            f"{metrics['train_images_per_second']:.0f} images/s"
        )
    return "\n".join(lines)
