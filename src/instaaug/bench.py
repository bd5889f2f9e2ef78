"""Benchmarks: costs of learned augmentation measured as ratios, side by side in one process.

Absolute times depend on the machine and its load; the ratio of two steps timed alternately in the same process
cancels most of that. ``instaaug bench`` runs them and writes ``bench.json``.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmenter
from .controller import EntropyController
from .crops import InstaAugCrop, RandomCrop
from .io import write_json
from .models import build_classifier
from .objective import InstaAugObjective, TaskObjective


def make_train_step(model: nn.Module, aug: Augmenter, objective: nn.Module, lr: float = 1e-3) -> Callable:
    """One joint training step (augment, one classifier forward and backward, optimiser steps) as a closure
    ``step(x (B, C, H, W), y (B,))``, exactly as ``instaaug.train`` runs it."""
    params = [p for module in (model, aug) for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        out = aug(x, y)
        per_view = F.cross_entropy(model(out.images), out.repeat(y), reduction="none")
        loss = objective(per_view, out).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def compare_steps(
    steps: dict[str, Callable], x: torch.Tensor, y: torch.Tensor, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of every step, timed round-robin (one call of each per round) after a warm-up."""
    for _ in range(warmup):
        for step in steps.values():
            step(x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step(x, y)
            if x.is_cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def crop_step_ratio(
    batch: int = 64, size: int = 48, channels: int = 1, repeats: int = 20, device: str = "cpu"
) -> dict[str, Any]:
    """Seconds per training step with LRP crops (φ and f trained jointly, n_copies = 1) and with random crops,
    same classifier (the crop experiment's 4-stage CNN), batch and output size.

    Two φ sizes: the crop experiment's (width 16, 4 stages) → ``train_step_ratio_crop``, and a slim one (width 8,
    3 stages, the same candidate boxes) → ``train_step_ratio_crop_slim``.
    """
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def classifier() -> nn.Module:
        torch.manual_seed(0)
        return build_classifier("small_cnn", channels, 10, width=20, depth=4).to(device)

    def lrp_step(width: int, depth: int) -> Callable:
        aug = InstaAugCrop(
            image_size=size, in_channels=channels, levels=(2,), depth=depth, width=width, global_crop=False
        ).to(device)
        objective = InstaAugObjective(EntropyController(*aug.entropy_range)).to(device)
        return make_train_step(classifier(), aug, objective)

    seconds = compare_steps(
        {
            "lrp_crop": lrp_step(16, 4),
            "lrp_crop_slim": lrp_step(8, 3),
            "random_crop": make_train_step(
                classifier(), RandomCrop(0.85, in_channels=channels).to(device), TaskObjective()
            ),
        },
        x,
        y,
        repeats=repeats,
    )
    return {
        "train_step_ratio_crop": seconds["lrp_crop"] / seconds["random_crop"],
        "train_step_ratio_crop_slim": seconds["lrp_crop_slim"] / seconds["random_crop"],
        **{f"seconds_{name}": value for name, value in seconds.items()},
        "batch": batch,
        "image_size": size,
    }


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_benchmarks(out: str | Path = "bench.json", quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run the benchmarks and write their results to ``out`` (JSON); ``quick`` checks that they work, fast."""
    repeats = 2 if quick else 30
    results = {"machine": machine(), **crop_step_ratio(batch=8 if quick else 64, repeats=repeats, device=device)}
    write_json(out, results)
    return results
