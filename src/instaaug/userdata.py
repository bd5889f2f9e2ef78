"""The user's own data for ``instaaug fit``, ``tta`` and ``evaluate``: an image folder, the Tiny-ImageNet layout or
an npz archive, split into training and validation, held in memory or streamed from disk.

Small datasets are read once into tensors (``cache="memory"``); large ones (``cache="stream"``, or ``auto`` above
``cache_limit_gb`` of float32 pixels) stay on disk and go through a ``DataLoader`` whose worker processes decode
and resize the files, with pinned memory on GPU and a ``DistributedSampler`` under torchrun. npz archives are
arrays already and always stay in memory.

Validation: ``val`` (a path of the same kinds) when given; for the Tiny-ImageNet layout its ``val/`` split; otherwise
a seeded hold-out of ``val_fraction`` of the training data, stratified by class for classification (every class
keeps the same fraction, at least one image of every class with two or more).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from . import distributed
from .data.loaders import (
    ImageFileDataset,
    list_images,
    list_tiny_imagenet,
    load_npz,
    load_npz_targets,
    read_images,
    read_targets_csv,
)
from .train import TensorBatches
from .usermodel import INPUT_NORMS

TASKS = ("classification", "regression")
CACHE_MODES = ("auto", "memory", "stream")


@dataclass(frozen=True)
class UserRunConfig:
    """The keys ``instaaug fit`` and ``instaaug tta`` share: the user's data, model, augmented families and loading
    (``FitConfig`` and ``TTAConfig`` add their own)."""

    #: the training data: an image folder (one sub-folder per class), the Tiny-ImageNet layout, or an npz.
    data: str = ""
    #: validation data of the same kind (measured only); empty: Tiny-ImageNet's val/ split, or a hold-out.
    val: str = ""
    #: the share of the data held out for validation (seeded, stratified by class) when there is no val; fit and
    #: tta hold out the same images for the same data and seed, so a model from fit is measured by tta on images
    #: it never trained on.
    val_fraction: float = 0.1
    #: every image is resized to image_size × image_size pixels.
    image_size: int = 64
    #: image channels: 1 or 3 (0: from the data).
    channels: int = 0
    #: a built-in model (small_cnn, preact_resnet18) or 'package.module:callable' returning an nn.Module.
    model: str = "small_cnn"
    #: keyword arguments of the model (JSON object), e.g. {"width": 32, "depth": 4}.
    model_args: dict[str, Any] = field(default_factory=dict)
    #: the model's weights, a safetensors file or a torch.save file (read with weights_only=True): initial weights
    #: for fit (empty: none), the trained model for tta (empty only for a factory that loads its own).
    weights: str = ""
    #: the model's input normalisation of [0, 1] images: none or imagenet (mean/std).
    input_norm: str = "none"
    #: the transform families (crop, rotation, translation, scale, hue, saturation, value, contrast, flip).
    augment: tuple[str, ...] = ("crop",)
    #: InstaAug options (JSON object of InstaAugConfig fields), e.g. {"width": 32, "levels": [1, 2]}.
    augment_options: dict[str, Any] = field(default_factory=dict)
    #: views per image of the final test-time-augmentation measurements.
    tta_views: tuple[int, ...] = (1, 4, 10)
    #: memory (read once into tensors), stream (decode in DataLoader workers) or auto (stream above cache_limit_gb).
    cache: str = "auto"
    #: auto streams when the training images as float32 would take more than this many GiB.
    cache_limit_gb: float = 4.0
    #: DataLoader worker processes for streamed data (-1: the CPUs less one, at most 8).
    workers: int = -1
    #: torch's CPU threads (0: unchanged).
    threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.augment, str):
            object.__setattr__(self, "augment", tuple(a.strip() for a in self.augment.split(",") if a.strip()))
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {sorted(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        for key in ("model_args", "augment_options"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a JSON object, got {getattr(self, key)!r}")
        check_view_counts(self.tta_views, "tta_views")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < -1:
            raise ValueError(f"workers must be an int ≥ -1, got {self.workers!r}")


def load_run_data(config: UserRunConfig, seed: int, *, task: str = "classification", targets: str = "") -> UserData:
    """``load_user_data`` with a run config's data keys (``data``, ``val``, ``val_fraction``, ``image_size``,
    ``channels``, ``cache``, ``cache_limit_gb``) and the run's seed."""
    return load_user_data(
        config.data,
        val=config.val,
        val_fraction=config.val_fraction,
        image_size=config.image_size,
        task=task,
        targets=targets,
        channels=config.channels,
        cache=config.cache,
        cache_limit_gb=config.cache_limit_gb,
        seed=seed,
    )


def check_view_counts(values: Any, key: str) -> None:
    """View counts: ints in 1 … 1024, else a ValueError naming ``key``."""
    if not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1024 for n in values):
        raise ValueError(f"{key} must be view counts in 1 … 1024, got {values!r}")


@dataclass
class Split:
    """One split of the data: in memory (``x`` (N, C, H, W) float32 in [0, 1]) or on disk (``files``), with its
    targets ``y``: labels (N,) int64 or real targets (N, D) float32."""

    y: torch.Tensor
    x: torch.Tensor | None = None
    files: list[Path] | None = None
    image_size: tuple[int, int] = (64, 64)
    channels: int = 3

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def streamed(self) -> bool:
        return self.x is None

    def dataset(self) -> ImageFileDataset:
        assert self.files is not None
        return ImageFileDataset(self.files, self.y, self.image_size, self.channels)

    def spread(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n items evenly spaced over the split (images (n, C, H, W), targets), read from disk if need be: a view
        across the classes for figures, as class folders are listed class by class."""
        index = torch.linspace(0, len(self) - 1, min(n, len(self))).round().long().unique()
        if self.x is not None:
            return self.x[index], self.y[index]
        dataset = self.dataset()
        return torch.stack([dataset[int(i)][0] for i in index]), self.y[index]

    def training_batches(
        self, batch_size: int, *, workers: int = 2, device: str | torch.device = "cpu", seed: int = 0
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches for ``train()``: ``TensorBatches`` in memory; a ``DataLoader`` over the files otherwise
        (its shuffling depends only on torch's global RNG, which ``train()`` seeds per epoch, so that a mid-epoch
        resume replays the same order; under torchrun a ``DistributedSampler``, whose ``set_epoch`` ``train()``
        calls)."""
        rank, world = distributed.rank(), distributed.world_size()
        if self.x is not None:
            return TensorBatches(self.x, self.y, batch_size, rank=rank, world_size=world)
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {world} processes")
        dataset = self.dataset()
        sampler = (
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            if world > 1
            else RandomSampler(dataset)
        )
        return DataLoader(
            dataset,
            batch_size=batch_size // world,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.device(device).type == "cuda",
            persistent_workers=workers > 0,
        )

    def batches(self, batch_size: int = 256, *, workers: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order (x (b, C, H, W), y (b, ...)), for evaluation."""
        if self.x is not None:
            yield from zip(self.x.split(batch_size), self.y.split(batch_size), strict=True)
            return
        yield from DataLoader(self.dataset(), batch_size=batch_size, shuffle=False, num_workers=workers)


@dataclass
class UserData:
    """Training and validation splits of the user's data, and what they are.

    Attributes:
        task: ``classification`` or ``regression``.
        outputs: the model's output size: the number of classes K, or the number of regression targets D.
        class_names: names of the K classes (classification), or of the D targets (regression).
        source: where the data came from, for the provenance of ``metrics.json``.
    """

    train: Split
    val: Split
    task: str
    outputs: int
    class_names: tuple[str, ...]
    channels: int
    source: dict[str, Any] = field(default_factory=dict)


def stratified_split(labels: np.ndarray | None, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) holding out ``fraction`` of n items, seeded; per class when ``labels`` (n,) are given.

    Every class with two or more items gives at least one to validation and keeps at least one for training.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1) when no validation data are given, got {fraction}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train, val = [], []
    for group in groups:
        group = rng.permutation(group)
        k = round(len(group) * fraction)
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        val.append(group[:k])
        train.append(group[k:])
    train_idx, val_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError(f"cannot hold out {fraction} of {n} items for validation; give --val or more data")
    return train_idx, val_idx


@dataclass
class _Raw:
    """A dataset before splitting: images in memory or files, and targets."""

    y: torch.Tensor
    names: tuple[str, ...]
    x: torch.Tensor | None = None
    files: list[Path] | None = None


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 8192 for s in size):
        raise ValueError(f"image_size must be a size in pixels (1 … 8192) or a pair of them, got {image_size!r}")
    return size  # type: ignore[return-value]


def _tiny_layout(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "val" / "val_annotations.txt").is_file()


def _existing(path: str, what: str) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"{what} {resolved} does not exist")
    return resolved


def _read(
    path: Path,
    *,
    task: str,
    targets: str,
    image_size: tuple[int, int],
    channels: int | None,
    split: str,
    stream: bool | None,
    cache_limit_gb: float,
) -> _Raw:
    """Read (or list, when streaming) one dataset path."""
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise ValueError(f"{path} is a file but not an .npz archive; give an image folder or an .npz file")
        if task == "regression":
            x, y = load_npz_targets(path, targets_key=targets or "targets", image_size=image_size)
            return _Raw(y, tuple(f"target{i}" for i in range(y.shape[1])), x=x)
        images, labels, names = load_npz(path, image_size=image_size)
        return _Raw(labels, names, x=images)
    if task == "regression":
        csv = Path(targets).expanduser() if targets else path / "targets.csv"
        if not csv.exists():
            raise FileNotFoundError(f"regression targets {csv} do not exist; give --targets FILE.csv")
        files, values, names = read_targets_csv(csv, path)
        y, listed_names = torch.from_numpy(values), names
    else:
        listing = list_tiny_imagenet(path, split) if split == "val" else list_images(path)
        files, y, listed_names = listing.paths, torch.from_numpy(listing.labels), listing.class_names
    pixel_bytes = len(files) * (channels or 3) * image_size[0] * image_size[1] * 4
    if stream is None:
        stream = pixel_bytes > cache_limit_gb * 2**30
    if stream:
        return _Raw(y, listed_names, files=list(files))
    return _Raw(y, listed_names, x=read_images(files, image_size=image_size, channels=channels, desc=path.name))


def _subset(raw: _Raw, index: np.ndarray, image_size: tuple[int, int], channels: int) -> Split:
    idx = torch.from_numpy(index)
    if raw.x is not None:
        return Split(raw.y[idx], x=raw.x[idx], image_size=image_size, channels=channels)
    assert raw.files is not None
    return Split(raw.y[idx], files=[raw.files[i] for i in index], image_size=image_size, channels=channels)


def load_user_data(
    data: str,
    *,
    val: str = "",
    val_fraction: float = 0.1,
    image_size: int | Sequence[int] = 64,
    task: str = "classification",
    targets: str = "",
    channels: int = 0,
    cache: str = "auto",
    cache_limit_gb: float = 4.0,
    seed: int = 0,
) -> UserData:
    """Read (or list, when streaming) the user's data and split it; see the module docstring.

    Args:
        data: an image folder (``<class>/<image>``), the Tiny-ImageNet layout or an ``.npz`` (``images``, and
            ``labels`` or, for regression, ``targets`` (N,) / (N, D) floats).
        val: validation data of the same kind ("" for the Tiny-ImageNet ``val/`` split or a hold-out).
        val_fraction: the hold-out's share of ``data`` when there is no other validation data.
        image_size: every image is resized to (size, size) or (H, W).
        task: ``classification`` or ``regression``; for regression from a folder, ``targets`` is a CSV
            ``file,<target>,...`` with paths relative to the folder (default ``DATA/targets.csv``).
        channels: 1 or 3 (0: 3 if any image is colour; streamed data: 3).
        cache: ``memory``, ``stream`` or ``auto`` (stream when the float32 pixels exceed ``cache_limit_gb``).
        seed: the hold-out's seed.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if channels not in (0, 1, 3):
        raise ValueError(f"channels must be 0 (from the data), 1 or 3, got {channels!r}")
    size = _image_size(image_size)
    stream = {"auto": None, "memory": False, "stream": True}[cache]
    root = _existing(data, "--data")
    options = dict(
        task=task,
        targets=targets,
        image_size=size,
        channels=channels or (3 if stream else None),
        stream=stream,
        cache_limit_gb=cache_limit_gb,
    )
    train_raw = _read(root, split="train", **options)  # type: ignore[arg-type]
    tiny = _tiny_layout(root) and task == "classification"
    if val:
        val_raw = _read(_existing(val, "--val"), split="train", **options)  # type: ignore[arg-type]
        train_idx, val_idx = np.arange(len(train_raw.y)), np.arange(len(val_raw.y))
    elif tiny:
        val_raw = _read(root, split="val", **options)  # type: ignore[arg-type]
        train_idx, val_idx = np.arange(len(train_raw.y)), np.arange(len(val_raw.y))
    else:
        val_raw = train_raw
        labels = train_raw.y.numpy() if task == "classification" else None
        train_idx, val_idx = stratified_split(labels, len(train_raw.y), val_fraction, seed)
    resolved_channels = int(train_raw.x.shape[1]) if train_raw.x is not None else (channels or 3)
    if val_raw.x is not None and int(val_raw.x.shape[1]) != resolved_channels:
        raise ValueError(
            f"the validation images have {val_raw.x.shape[1]} channels, the training images "
            f"{resolved_channels}; pass channels=1 or 3"
        )
    if task == "classification":
        outputs = len(train_raw.names)
        if val_raw is not train_raw and val_raw.names != train_raw.names:
            raise ValueError(
                f"the validation classes {list(val_raw.names)[:5]}… differ from the training classes "
                f"{list(train_raw.names)[:5]}…"
            )
    else:
        outputs = int(train_raw.y.shape[1])
        if int(val_raw.y.shape[1]) != outputs:
            raise ValueError(f"validation has {val_raw.y.shape[1]} targets per image, training {outputs}")
    train_split = _subset(train_raw, train_idx, size, resolved_channels)
    val_split = _subset(val_raw, val_idx, size, resolved_channels)
    source = {
        "data": str(root.resolve()),
        "val": str(Path(val).expanduser().resolve()) if val else ("tiny-imagenet val/" if tiny else "held out"),
        "train_size": len(train_split),
        "val_size": len(val_split),
        "image_size": list(size),
        "channels": resolved_channels,
        "streamed": train_split.streamed,
    }
    return UserData(train_split, val_split, task, outputs, train_raw.names, resolved_channels, source)


def load_split(
    data: str,
    *,
    task: str = "classification",
    targets: str = "",
    image_size: int | Sequence[int] = 64,
    channels: int = 0,
    cache: str = "auto",
    cache_limit_gb: float = 4.0,
) -> tuple[Split, int, tuple[str, ...], dict[str, Any]]:
    """All of ``data`` as one split (for the Tiny-ImageNet layout: its labelled ``val/`` split), with the output
    size (classes or targets), their names and the provenance record; arguments as for ``load_user_data``."""
    size = _image_size(image_size)
    root = _existing(data, "--data")
    tiny = _tiny_layout(root) and task == "classification"
    raw = _read(
        root,
        split="val" if tiny else "train",
        task=task,
        targets=targets,
        image_size=size,
        channels=channels or (3 if cache == "stream" else None),
        stream={"auto": None, "memory": False, "stream": True}[cache],
        cache_limit_gb=cache_limit_gb,
    )
    resolved = int(raw.x.shape[1]) if raw.x is not None else (channels or 3)
    split = _subset(raw, np.arange(len(raw.y)), size, resolved)
    outputs = len(raw.names) if task == "classification" else int(raw.y.shape[1])
    source = {"data": str(root.resolve()), "size": len(split), "image_size": list(size), "channels": resolved}
    return split, outputs, raw.names, source


def loader_throughput(batches: Iterable[tuple[torch.Tensor, Any]], max_batches: int = 20) -> float:
    """Images per second the batches are produced at (the first ``max_batches``; workers started included)."""
    started, images = time.perf_counter(), 0
    for i, (x, _) in enumerate(batches):
        images += x.shape[0]
        if i + 1 >= max_batches:
            break
    return images / max(time.perf_counter() - started, 1e-9)


def regression_metrics(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """R² (mean over the D targets; 1 − SSE/SST per target), MAE and RMSE of predictions (N, D) against (N, D)."""
    predictions, targets = predictions.double().reshape(targets.shape), targets.double()
    residual = (predictions - targets).square().sum(0)
    total = (targets - targets.mean(0)).square().sum(0).clamp_min(1e-12)
    return {
        "r2": float((1 - residual / total).mean()),
        "mae": float((predictions - targets).abs().mean()),
        "rmse": math.sqrt(float((predictions - targets).square().mean())),
    }


def default_workers() -> int:
    """Worker processes for streamed data: the CPUs, at most 8 (one process is the trainer)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
