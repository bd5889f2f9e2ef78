"""`instaaug run amortised`: amortised invariance learning on coloured, translated digits.

Every image is a 20×20 (by default) RGB canvas, black, with one of scikit-learn's bundled 8×8 digits upscaled to
a side of 9–12 px, placed uniformly at random and painted in one of ``NUM_COLOURS`` hues (jittered by ±0.03
turns, random saturation and value). Three downstream tasks need opposite invariances:

- ``digit``: the digit's identity (10 classes, accuracy) — colour is a nuisance, so appearance invariance helps;
- ``colour``: the digit's colour (``NUM_COLOURS`` classes, accuracy) — appearance invariance destroys it;
- ``position``: the digit's centre (x, y) as fractions of the canvas (regression, R²) — spatial invariance
  destroys it.

One ``ConditionedResNet`` is pre-trained with SimCLR (or MoCo-v2: ``--set method=moco``) over the corners
0,1 / 1,0 / 1,1 of the space (spatial, appearance); an ordinary model of the same architecture is pre-trained
with the same objective and every augmentation (corner 1,1 only, so its kernels do not depend on i: plain
convolutions; it trains at ``unconditioned_lr`` for ``unconditioned_epochs``: at the amortised model's rate its
embeddings collapse and its loss stays at chance). With ``task_specific`` (the default), one more ordinary model
is pre-trained for each task's own corner (``TASK_CORNERS``: every invariance the task can afford), the paper's
comparison of one amortised model against a model pre-trained for each task. Per task: the probe's learned i and
its test score, the score at each trained corner, of a grid search over i with cached features (selected on
validation), of the unconditioned model and of the task-specific one. Pre-training and probe images come from the
training split of the source digits, test images from the held-out split; i and the readouts are selected on a
validation set.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb

from ..amortised import (
    ConditionedBackbone,
    InvarianceProbe,
    InvarianceSpace,
    PretrainConfig,
    ProbeConfig,
    build_conditioned_backbone,
    evaluate_fixed,
    get_group,
    grid_search,
    metric_name,
    pretrain,
)
from ..data.digits import bundled_digits, split_indices
from ..plots import save_figure
from .common import run_on_builtin_data, write_metrics

DESCRIPTION = "amortised invariance learning: learned i for digit / colour / position tasks on coloured digits"

#: Hue classes of the colour task, evenly spaced around the wheel.
NUM_COLOURS = 6
#: The tasks: name → (task kind, outputs).
TASKS: dict[str, tuple[str, int]] = {
    "digit": ("classification", 10),
    "colour": ("classification", NUM_COLOURS),
    "position": ("regression", 2),
}
#: Each task's own corner of (spatial, appearance): the invariances it can afford, none that destroys its target.
TASK_CORNERS: dict[str, str] = {"digit": "1,1", "colour": "1,0", "position": "0,1"}


@dataclass(frozen=True)
class Config:
    """Settings of the amortised experiment (override with ``--set key=value``)."""

    seed: int = 0
    size: int = 20
    n_pretrain: int = 2000
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 1000
    backbone: str = "resnet"
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    num_kernels: int = 4
    method: str = "simclr"
    #: strengths of the spatial group: crop area fraction and translation (fraction of the side).
    crop_scale: tuple[float, float] = (0.35, 1.0)
    translate: float = 0.2
    pretrain_epochs: int = 20
    #: the ordinary (unconditioned) models' budget: at ``lr`` and 20 epochs the every-augmentation model's embeddings
    #: collapse and its NT-Xent stays at chance; at 5e-4 for 40 epochs it falls to about 4.7 (chance ln 255 = 5.54).
    unconditioned_epochs: int = 40
    unconditioned_lr: float = 5e-4
    #: also pre-train one ordinary model per task's corner (``TASK_CORNERS``) for the task-specific comparison.
    task_specific: bool = True
    batch_size: int = 128
    lr: float = 2e-3
    temperature: float = 0.2
    probe_epochs: int = 6
    probe_lr: float = 1e-2
    i_lr: float = 5e-2
    parametrisation: str = "clamp"
    readout_steps: int = 300
    grid_points: int = 3
    tasks: tuple[str, ...] = tuple(TASKS)
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        tasks = self.tasks if not isinstance(self.tasks, str) else tuple(t for t in self.tasks.split(",") if t)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
        object.__setattr__(self, "tasks", tuple(tasks))
        if self.backbone not in ("resnet", "vit"):
            raise ValueError(f"backbone must be 'resnet' or 'vit', got {self.backbone!r}")

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: little data, a tiny network, few epochs."""
        return cls(
            size=16,
            n_pretrain=128,
            n_train=96,
            n_val=64,
            n_test=64,
            widths=(8, 16),
            blocks=(1, 1),
            num_kernels=2,
            pretrain_epochs=1,
            unconditioned_epochs=1,
            batch_size=64,
            probe_epochs=1,
            readout_steps=40,
            grid_points=2,
        )


@dataclass(frozen=True)
class ColouredDigits:
    """Coloured, translated digits.

    Attributes:
        images: (N, 3, S, S) float32 in [0, 1].
        digit: (N,) int64 digit classes 0..9.
        colour: (N,) int64 hue classes 0..NUM_COLOURS-1.
        position: (N, 2) float32 centre (x, y) of the digit as fractions of the canvas.
    """

    images: torch.Tensor
    digit: torch.Tensor
    colour: torch.Tensor
    position: torch.Tensor

    def target(self, task: str) -> torch.Tensor:
        """The targets of task ``task`` (see ``TASKS``)."""
        return getattr(self, task)


def coloured_digits(n: int, split: str, seed: int, size: int = 20) -> ColouredDigits:
    """n images of source digits of ``split`` (``"train"`` or ``"test"``, see ``instaaug.data.digits``).

    Digits are drawn with replacement; side U{9..12} px (at most ``size``), position, hue class, saturation
    U(0.6, 1) and value U(0.7, 1) are independent per image.
    """
    digits, labels = bundled_digits()
    rng = np.random.default_rng(seed)
    pool = split_indices(split)
    src = rng.choice(pool, n)
    sides = rng.integers(9, min(12, size) + 1, n)
    canvas = np.zeros((n, size, size), np.float32)
    x0 = np.floor(rng.random(n) * (size - sides + 1)).astype(int)
    y0 = np.floor(rng.random(n) * (size - sides + 1)).astype(int)
    base = torch.from_numpy(np.array(digits[src]))[:, None]
    for s in np.unique(sides):  # one interpolation per side, not per image
        idx = np.flatnonzero(sides == s)
        up = F.interpolate(base[idx], size=(int(s), int(s)), mode="bilinear", align_corners=False)[:, 0].numpy()
        rows = y0[idx, None, None] + np.arange(s)[None, :, None]
        cols = x0[idx, None, None] + np.arange(s)[None, None, :]
        canvas[idx[:, None, None], rows, cols] = up.clip(0, 1)
    colour = rng.integers(0, NUM_COLOURS, n)
    hue = (colour / NUM_COLOURS + rng.uniform(-0.03, 0.03, n)) % 1.0
    hsv = np.stack([hue * 2 * np.pi, rng.uniform(0.6, 1.0, n), rng.uniform(0.7, 1.0, n)], 1).astype(np.float32)
    rgb = hsv_to_rgb(torch.from_numpy(hsv)[:, :, None, None])  # (N, 3, 1, 1)
    images = (torch.from_numpy(canvas)[:, None] * rgb).clamp(0, 1)
    centre = np.stack([x0 + sides / 2, y0 + sides / 2], 1) / size
    return ColouredDigits(
        images.float(),
        torch.from_numpy(labels[src].copy()),
        torch.from_numpy(colour).long(),
        torch.from_numpy(centre.astype(np.float32)),
    )


def _backbone(config: Config, space: InvarianceSpace) -> ConditionedBackbone:
    if config.backbone == "vit":
        return build_conditioned_backbone("vit", groups=space.names, image_size=(config.size, config.size))
    return build_conditioned_backbone(
        "resnet", groups=space.names, widths=config.widths, blocks=config.blocks, num_kernels=config.num_kernels
    )


def pretrain_record(
    model: ConditionedBackbone, space: InvarianceSpace, result: Any, batch_size: int, seconds: float
) -> dict[str, Any]:
    """What ``metrics.json`` records of a pre-trained model: its corners, first and final NT-Xent beside the chance
    level ln(2·batch − 1), the final loss per corner, the time and the parameter counts."""
    history = result.history
    return {
        "corners": space.corner_keys(),
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "chance_loss": math.log(2 * batch_size - 1),
        "final_corner_loss": history[-1]["corner_loss"] if history else {},
        "pretrain_seconds": round(seconds, 1),
        "parameters": model.parameter_counts(),
    }


def probe_settings(config: Any, seed: int) -> ProbeConfig:
    """The probe's settings from an amortised experiment's config (vision or audio)."""
    return ProbeConfig(
        epochs=config.probe_epochs,
        lr=config.probe_lr,
        i_lr=config.i_lr,
        parametrisation=config.parametrisation,
        readout_steps=config.readout_steps,
        batch_size=config.batch_size,
        seed=seed,
        device=config.device,
    )


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Pre-train the conditioned and the ordinary model, probe every task, write metrics.json and the figure."""
    return run_on_builtin_data("amortised", _run, config, out_dir, data, uses="built-in data only")


def _run(config: Config, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    s = config.seed
    pre = coloured_digits(config.n_pretrain, "train", 4 * s, config.size)
    splits = {
        "train": coloured_digits(config.n_train, "train", 4 * s + 1, config.size),
        "val": coloured_digits(config.n_val, "train", 4 * s + 2, config.size),
        "test": coloured_digits(config.n_test, "test", 4 * s + 3, config.size),
    }
    space = InvarianceSpace(
        (get_group("spatial", crop_scale=tuple(config.crop_scale), translate=config.translate), "appearance")
    )
    base = {
        "method": config.method,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "temperature": config.temperature,
        "seed": s,
    }
    models: dict[str, ConditionedBackbone] = {}
    methods: dict[str, dict[str, Any]] = {}
    model_corner: dict[str, torch.Tensor] = {}
    plans = [
        ("amortised", space, config.pretrain_epochs),
        ("unconditioned", InvarianceSpace(space.groups, corners=[(1, 1)]), config.unconditioned_epochs),
    ]
    if config.task_specific:
        for key in sorted({TASK_CORNERS[t] for t in config.tasks} - {"1,1"}):
            corner = [tuple(int(v) for v in key.split(","))]
            plans.append(
                (f"unconditioned_{key}", InvarianceSpace(space.groups, corners=corner), config.unconditioned_epochs)
            )
    for name, model_space, epochs in plans:
        torch.manual_seed(s)
        model = _backbone(config, model_space)
        t0 = time.perf_counter()
        lr = config.lr if name == "amortised" else config.unconditioned_lr
        settings = PretrainConfig(epochs=epochs, device=config.device, **{**base, "lr": lr})
        result = pretrain(model, model_space, pre.images, settings)
        model.save(out / name)
        models[name] = model
        model_corner[name] = model_space.corners[0]
        methods[name] = pretrain_record(model, model_space, result, config.batch_size, time.perf_counter() - t0)

    probe_config = probe_settings(config, s)
    tasks: dict[str, dict[str, Any]] = {}
    for task in config.tasks:
        kind, k = TASKS[task]
        t0 = time.perf_counter()
        train, val, test = ((splits[p].images, splits[p].target(task)) for p in ("train", "val", "test"))
        corner_scores = {
            key: evaluate_fixed(models["amortised"], space.corners[c], train, val, test, kind, k, probe_config)
            for c, key in enumerate(space.corner_keys())
        }
        torch.manual_seed(s)
        probe = InvarianceProbe(models["amortised"], kind, k, probe_config)
        probe.fit(train, val)
        grid = grid_search(models["amortised"], train, val, test, kind, k, config.grid_points, probe_config)
        ordinary = {
            # an ordinary model is read at the one corner it was trained at
            name: evaluate_fixed(model, model_corner[name], train, val, test, kind, k, probe_config)["test"]
            for name, model in models.items()
            if name != "amortised"
        }
        own = "unconditioned" if TASK_CORNERS[task] == "1,1" else f"unconditioned_{TASK_CORNERS[task]}"
        tasks[task] = {
            "metric": metric_name(kind),
            "learned_i": probe.learned_i(),
            "score_learned": probe.score(*test),
            "score_corners": {key: v["test"] for key, v in corner_scores.items()},
            "score_unconditioned": ordinary["unconditioned"],
            "task_corner": TASK_CORNERS[task],
            "score_task_specific": ordinary.get(own),
            "score_ordinary_models": ordinary,
            "score_grid": grid["test"],
            "grid_i": dict(zip(space.names, grid["i"], strict=True)),
            "val_corners": {key: v["val"] for key, v in corner_scores.items()},
            "i_trajectory": [h["i"] for h in probe.history],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    figure = plot_learned_invariances(tasks, space.names, out / "amortised_i.png")
    metrics = {"experiment": "amortised", "methods": methods, "config": asdict(config), "tasks": tasks}
    write_metrics(
        out,
        "amortised",
        methods,
        config,
        tasks=tasks,
        groups=space.describe(),
        figures=[figure.name],
        seconds=round(time.perf_counter() - started, 1),
    )
    return metrics


def plot_learned_invariances(tasks: dict[str, dict[str, Any]], groups: tuple[str, ...], path: Path) -> Path:
    """Bars of the learned i per task (one bar per group), with each task's scores in its title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), sharey=True, squeeze=False)
    for ax, (name, t) in zip(axes[0], tasks.items(), strict=True):
        values = [t["learned_i"][g] for g in groups]
        ax.bar(groups, values, color=["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"][: len(groups)])
        ax.set_ylim(0, 1.05)
        best = max(t["score_corners"].values())
        ax.set_title(f"{name}: {t['metric']} {t['score_learned']:.3f}\n(best corner {best:.3f})", fontsize=9)
        for x, v in enumerate(values):
            ax.text(x, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    axes[0][0].set_ylabel("learned invariance i")
    fig.suptitle("Learned invariance i per downstream task", fontsize=10, y=1.06)
    return save_figure(fig, path)


def summary(metrics: dict[str, Any]) -> str:
    """A short table: per task the learned i, its score, each corner's, the grid search's, the unconditioned."""
    tasks = metrics["tasks"]
    corners = list(next(iter(tasks.values()))["score_corners"])
    head = f"{'task':9s} {'metric':8s} {'learned i':>17s} {'learned':>8s} " + " ".join(f"{c:>7s}" for c in corners)
    lines = [head + f" {'grid':>7s} {'uncond.':>8s} {'task-sp.':>8s}"]
    for name, t in tasks.items():
        i = ",".join(f"{v:.2f}" for v in t["learned_i"].values())
        row = f"{name:9s} {t['metric']:8s} {i:>17s} {t['score_learned']:8.3f} "
        row += " ".join(f"{t['score_corners'][c]:7.3f}" for c in corners)
        specific = t.get("score_task_specific")
        row += f" {t['score_grid']:7.3f} {t['score_unconditioned']:8.3f} "
        lines.append(row + (f"{specific:8.3f}" if specific is not None else f"{'—':>8s}"))
    return "\n".join(lines)


__all__ = ["DESCRIPTION", "TASKS", "TASK_CORNERS", "ColouredDigits", "Config", "coloured_digits", "run", "summary"]
