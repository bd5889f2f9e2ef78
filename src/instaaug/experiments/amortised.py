"""`instaaug run amortised`: amortised invariance learning on coloured, translated digits.

Every image is a 20×20 (by default) RGB canvas, black, with one of scikit-learn's bundled 8×8 digits upscaled to
a side of 9–12 px, placed uniformly at random and painted in one of ``NUM_COLOURS`` hues (jittered by ±0.03
turns, random saturation and value). Three downstream tasks need opposite invariances:

- ``digit``: the digit's identity (10 classes, accuracy) — colour is a nuisance, so appearance invariance helps;
- ``colour``: the digit's colour (``NUM_COLOURS`` classes, accuracy) — appearance invariance destroys it;
- ``position``: the digit's centre (x, y) as fractions of the canvas (regression, R²) — spatial invariance
  destroys it.

One ``ConditionedResNet`` is pre-trained with SimCLR (or MoCo-v2: ``--set pretrain.method=moco``) over the corners
0,1 / 1,0 / 1,1 of the space (spatial, appearance); an ordinary model of the same architecture is pre-trained with
the same objective and every augmentation (corner 1,1 only, so its kernels do not depend on i: plain convolutions;
it trains at ``unconditioned_lr`` for ``unconditioned_epochs``: at 2e-3 its embeddings collapse and its loss stays
at chance; the amortised model trains at the same rate for that many epochs per corner). With ``task_specific`` (the
default), one more ordinary model is pre-trained for each task's own corner (``TASK_CORNERS``: every invariance the
task can afford), the paper's comparison of one amortised model against a model pre-trained for each task. Per task:
the probe's learned i and its test score, the score at each trained corner, of a grid search over i with cached
features (selected on validation), of the unconditioned model and of the task-specific one. Pre-training and probe
images come from the training split of the source digits, test images from the held-out split; i and the readouts
are selected on a validation set.

With ``seeds`` > 1 every seed is one whole run (its own data, initial weights and views; every pre-training and
probe), in worker processes; ``metrics.json`` holds the mean of every number over the seeds with its standard
deviation beside it (``<key>_std``) and each seed's own record under ``per_seed``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
from ..validation import check_int_fields
from .common import run_on_builtin_data, write_metrics
from .parallel import check_seeds, default_workers, run_jobs, summarise_seeds, training_seeds

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


#: The keys of ``PretrainConfig`` and ``ProbeConfig`` the experiments used to hold flat, before nesting them as
#: ``pretrain`` and ``probe``: old key → new key (still accepted, with a DeprecationWarning). ``batch_size`` set
#: both batch sizes; it now names ``pretrain.batch_size`` only (the probe's is ``probe.batch_size``).
FLAT_PRETRAIN_PROBE_KEYS: dict[str, str] = {
    "pretrain_epochs": "pretrain.epochs",
    "batch_size": "pretrain.batch_size",
    "lr": "pretrain.lr",
    "temperature": "pretrain.temperature",
    "probe_epochs": "probe.epochs",
    "probe_lr": "probe.lr",
    "i_lr": "probe.i_lr",
    "parametrisation": "probe.parametrisation",
    "readout_steps": "probe.readout_steps",
}


@dataclass(frozen=True)
class Config:
    """Settings of the amortised experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, …, seed + N − 1; a list: those seeds. Each seed is a whole run (its own data,
    #: weights, views); metrics are the mean and standard deviation over the seeds.
    seeds: int | tuple[int, ...] = 1
    size: int = 20
    n_pretrain: int = 2000
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 1000
    backbone: str = "resnet"
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    num_kernels: int = 4
    #: FiLM-conditioned normalisations in the ResNet (``ResNetConfig.film``).
    film: bool = False
    #: strengths of the spatial group: crop area fraction and translation (fraction of the side).
    crop_scale: tuple[float, float] = (0.35, 1.0)
    translate: float = 0.2
    #: the amortised model's contrastive pre-training (``--set pretrain.KEY=VALUE``, e.g. ``pretrain.method=moco``);
    #: the ordinary models use the same settings but ``unconditioned_epochs`` and ``unconditioned_lr``. Its
    #: ``seed`` and ``device`` are the experiment's own. The budget matches the task-specific models' per corner:
    #: 3 corners × 40 epochs at their lr 5e-4, so that "one amortised model against one model per task" compares
    #: equal training per corner. The earlier 20 epochs at 2e-3 (6–7 epochs per corner) ended at NT-Xent
    #: 4.39 ± 0.70 over seeds 0–2, against 2.84 ± 0.58 with this budget (chance 5.54).
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(method="simclr", epochs=120, batch_size=128, lr=5e-4, temperature=0.2)
    )
    #: the ordinary (unconditioned) models' budget: at lr 2e-3 and 20 epochs the every-augmentation model's
    #: embeddings collapse and its NT-Xent stays at chance; at 5e-4 for 40 epochs it falls to about 4.7 (chance
    #: ln 255 = 5.54).
    unconditioned_epochs: int = 40
    unconditioned_lr: float = 5e-4
    #: also pre-train one ordinary model per task's corner (``TASK_CORNERS``) for the task-specific comparison.
    task_specific: bool = True
    #: also read out the untrained network (the initial weights every model of a seed starts from, at i = all
    #: ones): a random-feature baseline that shows what pre-training adds (``score_untrained``). It is scored after
    #: every other number, which it leaves unchanged.
    untrained: bool = True
    #: the probe and every cached-feature readout (``--set probe.KEY=VALUE``); its ``seed`` and ``device`` are the
    #: experiment's own.
    probe: ProbeConfig = field(
        default_factory=lambda: ProbeConfig(
            epochs=6, batch_size=128, lr=1e-2, i_lr=5e-2, parametrisation="clamp", readout_steps=300
        )
    )
    grid_points: int = 3
    tasks: tuple[str, ...] = tuple(TASKS)
    #: torch threads (0: torch's default; 1 per worker process when seeds run in several).
    threads: int = 0
    #: worker processes, one seed each at a time (0: one per available core, at most one per seed).
    workers: int = 0
    device: str = "cpu"
    #: The pre-training and probe keys' old flat names, still accepted (with a DeprecationWarning).
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"method": "pretrain.method", **FLAT_PRETRAIN_PROBE_KEYS}

    def __post_init__(self) -> None:
        tasks = self.tasks if not isinstance(self.tasks, str) else tuple(t for t in self.tasks.split(",") if t)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
        object.__setattr__(self, "tasks", tuple(tasks))
        if self.backbone not in ("resnet", "vit"):
            raise ValueError(f"backbone must be 'resnet' or 'vit', got {self.backbone!r}")
        check_nested_settings(self)

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
            pretrain=dataclasses.replace(cls().pretrain, epochs=1, batch_size=64),
            unconditioned_epochs=1,
            probe=dataclasses.replace(cls().probe, epochs=1, batch_size=64, readout_steps=40),
            grid_points=2,
        )


def check_nested_settings(config: Any) -> None:
    """The checks an amortised experiment's config (vision or audio) shares: ``seeds``, ``workers``, ``threads``,
    and its ``pretrain`` / ``probe`` groups, whose ``seed`` and ``device`` the experiment sets itself."""
    check_seeds(config)
    check_int_fields(config, ("workers", "threads"), least=0)
    for name, kind in (("pretrain", PretrainConfig), ("probe", ProbeConfig)):
        group = getattr(config, name)
        if not isinstance(group, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, got {type(group).__name__}")
        for key in ("seed", "device"):
            if getattr(group, key) != getattr(kind, key):
                raise ValueError(f"{name}.{key} is set by the experiment: use --set {key}=... instead")


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
        "resnet",
        groups=space.names,
        widths=config.widths,
        blocks=config.blocks,
        num_kernels=config.num_kernels,
        film=config.film,
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
    """The probe's settings of one seed of an amortised experiment (vision or audio): its ``probe`` group with the
    experiment's seed and device."""
    return dataclasses.replace(config.probe, seed=seed, device=config.device)


def pretrain_settings(config: Any, seed: int, epochs: int, lr: float) -> PretrainConfig:
    """The pre-training settings of one model of one seed: the ``pretrain`` group with that model's epochs and
    learning rate and the experiment's seed and device."""
    return dataclasses.replace(config.pretrain, epochs=epochs, lr=lr, seed=seed, device=config.device)


def run_seeds_of(
    job: Callable[[tuple[Any, str, int, str]], dict[str, Any]], config: Any, out: Path, name: str
) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """``job((config, name, seed, out_dir))`` once per training seed, in worker processes (``parallel.run_jobs``).

    ``job`` is one whole run of an amortised experiment for one seed, returning ``{"methods": ..., "tasks": ...}``;
    it writes its models to ``out`` (one seed) or ``out/seed<seed>`` (several). Returns the seeds and the records.
    """
    seeds = training_seeds(config.seed, config.seeds)
    several = len(seeds) > 1
    progress = config.pretrain.progress
    if several and (config.workers or default_workers()) > 1:  # one bar over the seeds, not one per worker
        config = dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, progress=False))
    jobs = [(config, name, s, str(out / f"seed{s}" if several else out)) for s in seeds]
    return seeds, run_jobs(job, jobs, config.workers, config.threads, progress, f"{name} seeds")


def mean_over_seeds(records: Sequence[Any], spread: bool = True) -> Any:
    """The mean of records of one shape (one per seed): nested dicts and lists of numbers, strings and None.

    Numbers are averaged (``summarise_seeds``); with ``spread``, a dict holds ``<key>_std`` beside each float and
    each dict of floats: their standard deviations (0 for one seed). A key that some records lack (e.g. a corner
    no step drew) is averaged over those that have it. Lists are merged element by element (means only); anything
    else is the first record's when all agree, else the list of them.
    """
    first = records[0]
    if all(isinstance(r, dict) for r in records):
        out: dict[str, Any] = {}
        for key in dict.fromkeys(k for r in records for k in r):
            column = [r[key] for r in records if key in r]
            std = _spread(column) if spread else None
            out[key] = mean_over_seeds(column, spread and not isinstance(std, dict))
            if std is not None:
                out[f"{key}_std"] = std
        return out
    if isinstance(first, list) and all(isinstance(r, list) and len(r) == len(first) for r in records):
        return [mean_over_seeds(list(column), False) for column in zip(*records, strict=True)]
    if all(r == first for r in records):
        return first
    if all(_is_number(r) for r in records):
        return summarise_seeds([{"v": r} for r in records])["v"]
    return list(records)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _spread(column: Sequence[Any]) -> float | dict[str, float] | None:
    """The standard deviation over seeds of a column of floats, or of each entry of a column of dicts of floats."""
    if all(isinstance(v, float) for v in column):
        return summarise_seeds([{"v": v} for v in column])["v_std"]
    if all(isinstance(v, dict) and v and all(isinstance(x, float) for x in v.values()) for v in column):
        keys = dict.fromkeys(k for v in column for k in v)
        return {key: _spread([v[key] for v in column if key in v]) for key in keys}
    return None


def seed_summary(seeds: Sequence[int], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``methods`` and ``tasks`` of ``metrics.json`` over the seeds' records (``mean_over_seeds``, each entry with
    ``seeds``: their count), and ``per_seed``: one ``{"seed", "methods", "tasks"}`` record per seed."""
    merged = {}
    for part in ("methods", "tasks"):
        means = mean_over_seeds([r[part] for r in records])
        merged[part] = {key: {**value, "seeds": len(seeds)} for key, value in means.items()}
    return {**merged, "per_seed": [{"seed": s, **r} for s, r in zip(seeds, records, strict=True)]}


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Pre-train the conditioned and the ordinary model, probe every task, write metrics.json and the figure."""
    return run_on_builtin_data("amortised", _run, config, out_dir, data, uses="built-in data only")


def _run(config: Config, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    seeds, records = run_seeds_of(_seed_job, config, out, "amortised")
    results = seed_summary(seeds, records)
    return write_run("amortised", config, out, results, InvarianceSpace(_groups(config)), [], started)


def write_run(
    name: str,
    config: Any,
    out: Path,
    results: dict[str, Any],
    space: InvarianceSpace,
    figures: list[str],
    started: float,
) -> dict[str, Any]:
    """The end of an amortised experiment's run (vision or audio): the learned-i figure (``<name>_i.png``) and
    ``metrics.json`` with the models, tasks, groups, ``figures`` (besides the learned-i one) and per-seed records."""
    figure = plot_learned_invariances(results["tasks"], space.names, out / f"{name.replace('-', '_')}_i.png")
    write_metrics(
        out,
        name,
        results["methods"],
        config,
        tasks=results["tasks"],
        groups=space.describe(),
        figures=[figure.name, *figures],
        per_seed=results["per_seed"],
        seconds=round(time.perf_counter() - started, 1),
    )
    return {"experiment": name, "config": asdict(config), **results}


def _groups(config: Config) -> tuple[Any, ...]:
    """The invariance groups (spatial, appearance) at the config's strengths."""
    return (get_group("spatial", crop_scale=tuple(config.crop_scale), translate=config.translate), "appearance")


def _seed_job(job: tuple[Config, str, int, str]) -> dict[str, Any]:
    """One seed of the experiment: pre-train every model (saved under ``out``) and probe every task."""
    config, _, s, out_dir = job
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = coloured_digits(config.n_pretrain, "train", 4 * s, config.size)
    splits = {
        "train": coloured_digits(config.n_train, "train", 4 * s + 1, config.size),
        "val": coloured_digits(config.n_val, "train", 4 * s + 2, config.size),
        "test": coloured_digits(config.n_test, "test", 4 * s + 3, config.size),
    }
    space = InvarianceSpace(_groups(config))
    models: dict[str, ConditionedBackbone] = {}
    methods: dict[str, dict[str, Any]] = {}
    model_corner: dict[str, torch.Tensor] = {}
    plans = [
        ("amortised", space, config.pretrain.epochs),
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
        lr = config.pretrain.lr if name == "amortised" else config.unconditioned_lr
        settings = pretrain_settings(config, s, epochs, lr)
        result = pretrain(model, model_space, pre.images, settings)
        model.save(out / name)
        models[name] = model
        model_corner[name] = model_space.corners[0]
        methods[name] = pretrain_record(model, model_space, result, settings.batch_size, time.perf_counter() - t0)
    probe_config = probe_settings(config, s)
    tasks = {t: _probe_task(config, t, space, models, model_corner, splits, probe_config) for t in config.tasks}
    if config.untrained:
        torch.manual_seed(s)
        untrained = _backbone(config, space).eval()
        ones = torch.ones(space.dim)
        for t, record in tasks.items():
            kind, k = TASKS[t]
            train, val, test = ((splits[p].images, splits[p].target(t)) for p in ("train", "val", "test"))
            record["score_untrained"] = evaluate_fixed(untrained, ones, train, val, test, kind, k, probe_config)["test"]
    return {"methods": methods, "tasks": tasks}


def _probe_task(
    config: Config,
    task: str,
    space: InvarianceSpace,
    models: dict[str, ConditionedBackbone],
    model_corner: dict[str, torch.Tensor],
    splits: dict[str, ColouredDigits],
    probe_config: ProbeConfig,
) -> dict[str, Any]:
    """One task's record: the learned i and its score, each corner's, the grid search's and the ordinary models'."""
    kind, k = TASKS[task]
    t0 = time.perf_counter()
    train, val, test = ((splits[p].images, splits[p].target(task)) for p in ("train", "val", "test"))
    corner_scores = {
        key: evaluate_fixed(models["amortised"], space.corners[c], train, val, test, kind, k, probe_config)
        for c, key in enumerate(space.corner_keys())
    }
    torch.manual_seed(probe_config.seed)
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
    return {
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
    """A short table: per task the learned i, its score, each corner's, the grid search's, the unconditioned
    model's, the task-specific one's and the untrained network's (mean ± std over the seeds when there are
    several)."""
    tasks = metrics["tasks"]
    first = next(iter(tasks.values()))
    corners = list(first["score_corners"])
    wide = 6 if first.get("seeds", 1) > 1 else 0
    head = f"{'task':9s} {'metric':8s} {'learned i':>17s} {'learned':>{8 + wide}s} "
    head += " ".join(f"{c:>{7 + wide}s}" for c in corners)
    lines = [head + f" {'grid':>{7 + wide}s} {'uncond.':>{8 + wide}s} {'task-sp.':>{8 + wide}s} {'untr.':>{6 + wide}s}"]
    for name, t in tasks.items():
        i = ",".join(f"{v:.2f}" for v in t["learned_i"].values())
        row = f"{name:9s} {t['metric']:8s} {i:>17s} {score_cell(t, 'score_learned', 8 + wide)} "
        row += " ".join(score_cell(t, "score_corners", 7 + wide, c) for c in corners)
        row += f" {score_cell(t, 'score_grid', 7 + wide)} {score_cell(t, 'score_unconditioned', 8 + wide)} "
        row += f"{score_cell(t, 'score_task_specific', 8 + wide)} {score_cell(t, 'score_untrained', 6 + wide)}"
        lines.append(row)
    return "\n".join(lines)


def score_cell(record: dict[str, Any], key: str, width: int, entry: str | None = None) -> str:
    """``record[key]`` (or its ``entry``) as 0.123, or 0.123±0.004 over several seeds; — for None or a key the
    record lacks (e.g. ``score_untrained`` in runs written before it existed); right-aligned."""
    value, std = record.get(key), record.get(f"{key}_std")
    if entry is not None:
        value, std = value[entry], std[entry] if isinstance(std, dict) else None
    if value is None:
        return f"{'—':>{width}s}"
    text = f"{value:.3f}" + (f"±{std:.3f}" if record.get("seeds", 1) > 1 and std is not None else "")
    return f"{text:>{width}s}"


__all__ = [
    "DESCRIPTION",
    "TASKS",
    "TASK_CORNERS",
    "ColouredDigits",
    "Config",
    "coloured_digits",
    "mean_over_seeds",
    "run",
    "summary",
]
