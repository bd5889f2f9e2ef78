"""``instaaug fit --task contrastive``: self-supervised pre-training of the user's encoder on their images, with
two views per image drawn from a learned p(τ; φ(x)) (``--method instaaug``) or from fixed random ranges
(``--method random``), trained with NT-Xent (SimCLR) through ``instaaug.train``.

The model (a built-in name or ``package.module:callable``) is the encoder: its output for an image, of size
``feature_dim``, is the feature a linear probe reads; a projection head on top of it feeds NT-Xent. Labels are not
used for training (one folder of images is enough). When the data have two or more classes, a linear probe on the
frozen features is fitted on the training images (its C chosen on a held-out fifth of them) and measured on the
validation images, without and with test-time augmentation (``tta_views``). The run writes ``model.safetensors``
(the encoder), ``augmenter/``, ``metrics.jsonl``, ``metrics.json`` and ``views.png``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .augment import Augmenter, InstaAug
from .baselines import RandomAugment
from .contrastive import InstanceContrast, ProjectedEncoder
from .io import save_tensors, write_json
from .linear_probe import select_readouts
from .objective import ContrastiveInstaAugObjective, TaskObjective
from .plots import plot_sampled_views
from .provenance import provenance
from .train import train
from .userdata import Split, UserData, default_workers, load_run_data, loader_throughput
from .usermodel import build_model_with_weights

#: The methods that draw two different views per image (``none`` has nothing to contrast; Augerino's objective is
#: a supervised one).
CONTRASTIVE_METHODS = ("instaaug", "random")
PROBE_CS = (0.001, 0.01, 0.1, 1.0)


class InstanceBatches:
    """Batches (x, labels) of ``train()``'s data re-labelled (x, instance ids): every image of a global batch its
    own id (this process's images numbered after the previous processes'), so that only its views are positives."""

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.sampler = getattr(batches, "sampler", None)  # train() calls its set_epoch under torchrun

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank = distributed.rank()
        for x, _ in self.batches:
            n = x.shape[0]
            yield x, torch.arange(rank * n, (rank + 1) * n)


def build_contrastive_augmenter(
    method: str, families: tuple[str, ...], *, channels: int, augment_options: dict[str, Any], random_ranges: dict
) -> tuple[Augmenter, nn.Module]:
    """Two views per image: InstaAug with one entropy controller per part of its distribution, or fixed ranges."""
    if method == "random":
        ranges = {k: tuple(v) if isinstance(v, list) else v for k, v in random_ranges.items()}
        return RandomAugment(families, ranges or None, in_channels=channels, n_copies=2), TaskObjective()
    if method != "instaaug":
        raise ValueError(f"--task contrastive needs --method instaaug or random (two different views), got {method!r}")
    aug = InstaAug(families, **{"in_channels": channels, **augment_options, "n_copies": 2})
    if aug.mode == "class":
        raise ValueError("mode 'class' needs labels; contrastive pre-training has none")
    return aug, ContrastiveInstaAugObjective(aug.part_controllers())


@torch.no_grad()
def features(
    model: ProjectedEncoder, split: Split, device: torch.device, *, aug: nn.Module | None = None, views: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder features of a split: (N, D) of the images, or (N, views, D) of views drawn from ``aug``; labels (N,)."""
    model.eval()
    if aug is not None:
        aug.eval()
    out, labels = [], []
    for x, y in split.batches(256, workers=0):
        x = x.to(device)
        if aug is None:
            out.append(model.features(x).float().cpu())
        else:
            images = aug(x, n_copies=views).images
            out.append(model.features(images).float().view(x.shape[0], views, -1).cpu())
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


def linear_probe(
    model: ProjectedEncoder, aug: nn.Module, data: UserData, device: torch.device, tta_views: tuple[int, ...], seed: int
) -> dict[str, dict[str, float]]:
    """Validation accuracy of a linear probe on frozen features: ``none`` (the images) and ``tta-n<V>``."""
    train_x, train_y = features(model, data.train, device)
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    held, fit = order[: max(1, len(order) // 5)], order[max(1, len(order) // 5) :]
    views = max(tta_views)
    train_views, _ = features(model, data.train, device, aug=aug, views=views)
    readout, readout_tta, chosen = select_readouts(
        (train_x[fit], train_y[fit]), (train_x[held], train_views[held], train_y[held]), PROBE_CS, seed
    )
    started = time.perf_counter()
    val_x, val_y = features(model, data.val, device)
    results = {"none": {"accuracy": readout.accuracy(val_x, val_y), "probe_c": chosen["c"]}}
    results["none"]["seconds_per_image"] = (time.perf_counter() - started) / len(val_y)
    for n in tta_views:
        torch.manual_seed(seed)
        started = time.perf_counter()
        val_views, _ = features(model, data.val, device, aug=aug, views=n)
        results[f"tta-n{n}"] = {
            "accuracy": readout_tta.accuracy(val_views, val_y),
            "probe_c": chosen["c_tta"],
            "seconds_per_image": (time.perf_counter() - started) / len(val_y),
        }
    return results


def run_contrastive_fit(config: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """``instaaug fit --task contrastive`` (``config``: a ``FitConfig``); returns the metrics of ``metrics.json``."""
    out = Path(out_dir)
    torch.manual_seed(config.train.seed)
    data = load_run_data(config, config.train.seed, task="classification")
    device = distributed.local_device(config.train.device)
    encoder = build_model_with_weights(
        config.model,
        config.weights,
        in_channels=data.channels,
        outputs=config.feature_dim,
        args=config.model_args,
        input_norm=config.input_norm,
    )
    model = ProjectedEncoder(encoder, config.feature_dim, hidden=config.feature_dim).to(device)
    _check_features(model, data, device, config.feature_dim)
    aug, objective = build_contrastive_augmenter(
        config.method,
        config.augment,
        channels=data.channels,
        augment_options=config.augment_options,
        random_ranges=config.random_ranges,
    )
    workers = default_workers() if config.workers < 0 else config.workers
    batches = data.train.training_batches(
        config.train.batch_size, workers=workers, device=device, seed=config.train.seed
    )
    loader_rate = loader_throughput(batches)
    # No supervised pre-training epochs: there are no labels to pre-train with.
    settings = dataclasses.replace(config.train, pretrain_epochs=0)
    history = train(
        model,
        aug,
        objective,
        InstanceBatches(batches),
        settings,
        out_dir=out,
        task_loss=InstanceContrast(config.temperature),
    )
    probe = {}
    if len(data.class_names) >= 2:
        probe = linear_probe(model, aug, data, device, config.tta_views, config.train.seed)
    metrics: dict[str, Any] = {
        "command": "fit",
        "task": "contrastive",
        "method": config.method,
        "val": probe,
        "history": history,
        "loader_images_per_second": loader_rate,
        "train_images_per_second": len(data.train) / history[-1]["seconds"] if history else float("nan"),
        "classes": list(data.class_names),
        "config": dataclasses.asdict(config),
        "provenance": provenance(seed=config.train.seed, device=str(device), data=data.source),
    }
    if distributed.is_main_process():
        save_tensors(out / "model.safetensors", {k: v.detach().cpu() for k, v in encoder.state_dict().items()})
        aug.save(out / "augmenter")
        images = data.val.spread(8)[0].to(device)
        metrics["figures"] = [plot_sampled_views(aug, images, out / "views.png", seed=config.train.seed).name]
        write_json(out / "metrics.json", metrics)
    return metrics


def _check_features(model: ProjectedEncoder, data: UserData, device: torch.device, dim: int) -> None:
    """A clear error now when the encoder's outputs are not (N, feature_dim) features."""
    x = data.train.spread(2)[0].to(device)
    model.eval()
    try:
        with torch.no_grad():
            out = model.features(x)
    except RuntimeError as e:
        raise ValueError(f"the model fails on {tuple(x.shape)} images: {str(e).splitlines()[0]}") from None
    finally:
        model.train()
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != dim:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model returns {shape} for 2 images; expected (2, {dim}) features (feature_dim)")
