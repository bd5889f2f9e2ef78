"""``instaaug tta`` and ``instaaug evaluate``: learned test-time augmentation for a FROZEN model on the user's data.

``instaaug tta`` (the paper's Section 5.3, Table 2) trains φ alone against the user's pre-trained model, which stays
frozen in eval mode (its BatchNorm statistics unchanged), on the training split, and then measures on the
validation split, each with its time per image:

* ``none``: the model on the whole image;
* ``random-n<n>``: the mean of the logits over n random crops (side uniform in [``random_min_scale``, 1]);
* ``instaaug-n<n>``: over n views sampled from p(τ; φ(x));
* ``instaaug-top<k>``: over φ's k most probable crops (deterministic; augmenters with crops only).

The learned augmenter is saved to ``augmenter/``. ``instaaug evaluate`` applies a saved augmenter (or none) and a
model to a dataset and writes ``predictions.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .augment import Augmenter, InstaAug
from .baselines import RandomCrop
from .fit import AUGMENTER_DIR, apply_preset, check_model_output, predict_outputs, score
from .io import atomic_write_bytes, write_json
from .provenance import provenance
from .train import TrainConfig, train
from .tta import MERGE_MODES, TTAWrapper
from .userdata import (
    TASKS,
    Split,
    UserData,
    UserRunConfig,
    check_view_counts,
    default_workers,
    load_run_data,
    load_split,
)
from .usermodel import build_model_with_weights


@dataclass(frozen=True)
class TTAConfig(UserRunConfig):
    """Settings of ``instaaug tta`` (``--set key=value``; the training keys of φ as ``train.KEY=VALUE``): the
    shared keys of ``UserRunConfig`` (``augment``: the families φ learns; ``weights``: the frozen model's) and
    these."""

    #: random-crop TTA: crop sides uniform in [random_min_scale, 1] (as RandomResizedCrop-style training).
    random_min_scale: float = 0.5
    #: numbers k of φ's most probable crops (top-k TTA; augmenters with crops only).
    top_views: tuple[int, ...] = (1, 4, 10)
    #: how the views' predictions are merged (see instaaug.tta.merge_predictions).
    merge: str = "logits"
    #: φ's training (the model stays frozen): the crop recipe's Adam at 1e-3 with cosine decay.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, aug_lr=1e-3, aug_lr_schedule="cosine", batch_size=64)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.augment:
            raise ValueError("augment must name at least one transform family")
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {self.merge!r}")
        check_view_counts(self.top_views, "top_views")
        if not 0 < self.random_min_scale <= 1:
            raise ValueError(f"random_min_scale must lie in (0, 1], got {self.random_min_scale!r}")
        if self.train.epochs < 1:
            raise ValueError("train.epochs must be ≥ 1: φ must train")
        if self.train.pretrain_epochs:
            raise ValueError("train.pretrain_epochs must be 0: the model is frozen")

    @classmethod
    def quick(cls, **overrides: Any) -> TTAConfig:
        """A short check that everything runs: 1 epoch of φ, 1 and 4 views."""
        return cls(
            **{
                "tta_views": (1, 4),
                "top_views": (1, 4),
                "train": TrainConfig(epochs=1, aug_lr=1e-3, aug_lr_schedule="cosine", batch_size=64),
                **overrides,
            }
        )


#: The paper's full-scale recipe of Table 2 (ImageNet, a frozen ResNet-50 given by the user, 10 views; the
#: paper: 81.18% top-1 with learned crops against 80.43% without TTA). φ sees the 224-px images at 64 px, with
#: candidates over its 16×16 and 8×8 cells plus the whole image.
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet-tta": {
        "image_size": 224,
        "input_norm": "imagenet",
        "augment": ("crop",),
        "augment_options": {"phi_size": [64, 64], "levels": [1, 2], "global_crop": True},
        "tta_views": (1, 4, 10),
        "top_views": (1, 4, 10),
        "train": {"epochs": 5, "batch_size": 256, "aug_lr": 1e-3, "aug_lr_schedule": "cosine"},
    },
}


def load_frozen_model(
    spec: str,
    weights: str,
    *,
    in_channels: int,
    outputs: int,
    args: dict[str, Any],
    input_norm: str,
    device: torch.device,
) -> nn.Module:
    """The user's model with its weights, frozen (no gradients) and in eval mode, on ``device``."""
    model = build_model_with_weights(
        spec, weights, in_channels=in_channels, outputs=outputs, args=args, input_norm=input_norm
    )
    return model.requires_grad_(False).eval().to(device)


def measure_tta(
    model: nn.Module,
    aug: Augmenter | None,
    split: Split,
    task: str,
    device: torch.device,
    *,
    tta_views: tuple[int, ...],
    top_views: tuple[int, ...] = (),
    random_min_scale: float = 0.5,
    merge: str = "logits",
    seed: int = 0,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """Validation scores and seconds per image of the model with no TTA, random-crop TTA, sampled-φ TTA and top-k
    TTA (see the module docstring)."""
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, wrapper: nn.Module | None) -> None:
        torch.manual_seed(seed)
        outputs, targets, seconds = predict_outputs(model, split, device, wrapper=wrapper, workers=workers)
        results[name] = {**score(outputs, targets, task), "seconds_per_image": seconds / len(split)}

    measure("none", None)
    channels = split.channels
    random_crops = RandomCrop(random_min_scale, 1.0, in_channels=channels).to(device)
    for n in tta_views:
        measure(f"random-n{n}", TTAWrapper(model, random_crops, n, merge=merge).eval())
    if aug is not None:
        for n in tta_views:
            measure(f"instaaug-n{n}", TTAWrapper(model, aug, n, merge=merge).eval())
        if isinstance(aug, InstaAug) and aug.config.has_crop:
            for k in top_views:
                measure(f"instaaug-top{k}", TTAWrapper(model, aug, k, merge=merge, views="top").eval())
    return results


def run_tta(config: TTAConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Learn φ against the frozen model and measure TTA, as the module docstring says; returns the metrics."""
    out = Path(out_dir)
    torch.manual_seed(config.train.seed)
    data: UserData = load_run_data(config, config.train.seed)
    device = distributed.local_device(config.train.device)
    model = load_frozen_model(
        config.model,
        config.weights,
        in_channels=data.channels,
        outputs=data.outputs,
        args=config.model_args,
        input_norm=config.input_norm,
        device=device,
    )
    check_model_output(model, data, device)
    aug = InstaAug(config.augment, **{"in_channels": data.channels, **config.augment_options})
    workers = default_workers() if config.workers < 0 else config.workers
    batches = data.train.training_batches(
        config.train.batch_size, workers=workers, device=device, seed=config.train.seed
    )
    history = train(model, aug, aug.objective(), batches, config.train, out_dir=out)
    aug.eval()
    results = measure_tta(
        model,
        aug,
        data.val,
        data.task,
        device,
        tta_views=config.tta_views,
        top_views=config.top_views,
        random_min_scale=config.random_min_scale,
        merge=config.merge,
        seed=config.train.seed,
        workers=workers,
    )
    metrics: dict[str, Any] = {
        "command": "tta",
        "task": data.task,
        "val": results,
        "history": history,
        "classes": list(data.class_names),
        "config": dataclasses.asdict(config),
        "provenance": provenance(seed=config.train.seed, device=str(device), data=data.source),
    }
    if distributed.is_main_process():
        aug.save(out / AUGMENTER_DIR)
        write_json(out / "metrics.json", metrics)
    return metrics


def tta_preset(config: TTAConfig, name: str) -> TTAConfig:
    """``config`` with a preset of ``PRESETS`` applied."""
    return apply_preset(config, name, PRESETS)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``instaaug evaluate``: a model (and optionally a saved augmenter for TTA) on a dataset."""

    #: the data: an image folder, the Tiny-ImageNet layout (its val/ split) or an npz; every image is evaluated.
    data: str = ""
    image_size: int = 64
    channels: int = 0
    #: classification or regression (an npz with `targets`, or a folder with --targets CSV).
    task: str = "classification"
    targets: str = ""
    model: str = "small_cnn"
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    input_norm: str = "none"
    #: a saved augmenter directory (from fit or tta); empty: no test-time augmentation.
    augmenter: str = ""
    #: views per image with an augmenter.
    views: int = 10
    #: sample (views drawn from the augmenter) or top (its most probable crops).
    view_mode: str = "sample"
    merge: str = "logits"
    seed: int = 0
    device: str = "cpu"
    workers: int = -1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.view_mode not in ("sample", "top"):
            raise ValueError(f"view_mode must be sample or top, got {self.view_mode!r}")
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {self.merge!r}")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or not 1 <= self.views <= 1024:
            raise ValueError(f"views must be an int in 1 … 1024, got {self.views!r}")


def run_evaluate(config: EvaluateConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Predict every image of ``config.data`` (with TTA when an augmenter is given); write ``predictions.csv``
    (index, target, prediction — the class and its probability, or the D predicted values) and ``metrics.json``."""
    out = Path(out_dir)
    split, outputs, names, source = load_split(
        config.data,
        task=config.task,
        targets=config.targets,
        image_size=config.image_size,
        channels=config.channels,
    )
    device = distributed.local_device(config.device)
    model = load_frozen_model(
        config.model,
        config.weights,
        in_channels=split.channels,
        outputs=outputs,
        args=config.model_args,
        input_norm=config.input_norm,
        device=device,
    )
    wrapper = None
    if config.augmenter:
        aug = Augmenter.load(config.augmenter, map_location=device).eval()
        wrapper = TTAWrapper(model, aug, config.views, merge=config.merge, views=config.view_mode).eval()
    torch.manual_seed(config.seed)
    workers = default_workers() if config.workers < 0 else config.workers
    predictions, targets, seconds = predict_outputs(model, split, device, wrapper=wrapper, workers=workers)
    if predictions.shape[1] != outputs:
        raise ValueError(f"the model returns {predictions.shape[1]} outputs; the data need {outputs}")
    metrics = {
        "command": "evaluate",
        "task": config.task,
        **score(predictions, targets, config.task),
        "seconds_per_image": seconds / len(split),
        "config": dataclasses.asdict(config),
        "provenance": provenance(seed=config.seed, device=str(device), data=source),
    }
    text = io.StringIO()
    writer = csv.writer(text)
    if config.task == "classification":
        probabilities = predictions.softmax(-1)
        confidence, predicted = probabilities.max(-1)
        writer.writerow(["index", "label", "prediction", "probability", "class"])
        for i, (t, p, c) in enumerate(zip(targets.tolist(), predicted.tolist(), confidence.tolist(), strict=True)):
            writer.writerow([i, t, p, f"{c:.6f}", names[p] if p < len(names) else p])
    else:
        writer.writerow(["index", *(f"target_{n}" for n in names), *(f"prediction_{n}" for n in names)])
        for i, (t, p) in enumerate(zip(targets.tolist(), predictions.tolist(), strict=True)):
            writer.writerow([i, *(f"{v:.6g}" for v in t), *(f"{v:.6g}" for v in p)])
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "predictions.csv", text.getvalue().encode())
        write_json(out / "metrics.json", metrics)
    return metrics
