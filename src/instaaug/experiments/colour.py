"""Colour experiment: instance-specific hue invariance (the paper's Appendix D, Figure D.1).

The data (``instaaug.data.colours``) mix classes defined by shape, whose label survives any hue shift, with classes
defined only by hue (five fruits of one shape, their hues spaced round the colour wheel). A learned, input-dependent
augmenter over hue, saturation and value should widen the hue range of the shape-defined classes and keep the
fruits' narrow.

Every method trains a fresh copy of the same classifier (same initial weights) on the same data: ``none``,
``random`` (fixed ranges), ``augerino`` (one global learned range) and ``instaaug``. Metrics per method: test
accuracy (overall and per class group) and, for the methods with ranges, the mean width of each dimension's
interval over the test images of the shape-defined and of the hue-defined classes. With ``seeds`` > 1 every method
is trained once per seed (each seed's run is the single run at that seed: its own data, initial weights and
training) and every metric is reported as its mean, ``<metric>_std`` and the number of ``seeds``, with each seed's
values under ``per_seed``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..augment import Augmenter, InstaAug
from ..data.colours import CLASS_NAMES, HUE_DEFINED, NUM_CLASSES, SHAPE_DEFINED, ColourData, make_colour_dataset
from ..distributed import is_main_process
from ..models import build_classifier
from ..plots import plot_colour_ranges
from ..train import TrainConfig, accuracy, predict, train
from ..validation import check_int_fields, check_numbers
from .common import (
    UNIFORM_METHODS,
    build_method,
    flat_train_aliases,
    learned_ranges,
    run_on_builtin_data,
    write_metrics,
)
from .parallel import check_seeds, run_config_seeds, run_dir, training_seeds

#: The methods (``common.UNIFORM_METHODS``: none, random, augerino, instaaug), in reporting order.
METHODS = UNIFORM_METHODS

DESCRIPTION = "hue/saturation/value ranges on shape-defined vs hue-defined classes (paper Fig. D.1)"
TRANSFORMS = ("hue", "saturation", "value")
FIGURE_FILE = "colour_ranges.png"


@dataclass(frozen=True)
class Config:
    """Settings of the colour experiment (override any with ``--set key=value``).

    Attributes:
        seed: seeds the data (train and test are generated from different streams), the initial weights and
            the training run.
        seeds: an int N: seeds seed, seed + 1, … seed + N - 1; or a list of seeds. Each seed's run is the single
            run at that seed.
        n_train, n_test: generated training and test images (balanced over the 9 classes).
        image_size: image side in pixels.
        train: the training run of every method (``--set train.KEY=VALUE``; its ``seed`` is ``seed``): 16 joint
            epochs of f and the augmenter after 3 of f alone (the paper pre-trains f so that the task loss says
            something about hue when φ starts learning), batch 64, f's and φ's learning rates 3e-3.
        width, depth: the classifier (``small_cnn``).
        aug_width, aug_depth: InstaAug's invariance network φ (``small_cnn``).
        methods: the methods to run, a subset of ``none, random, augerino, instaaug``.
        entropy_range: InstaAug's entropy band [Hmin, Hmax] (nats; the entropy of one input is Σ over hue,
            saturation and value of log width). What the data allow: shape-defined inputs free in hue
            (width ≈ 1) and saturation (≈ 2), value ≈ 1.5, about +1.1 nats; fruits ±0.08 in hue, ≈ 1.4 in
            saturation and value, about -1.2 nats; with 4 of 9 classes shape-defined a mean of ≈ -0.2. The band
            [-0.4, 0] brackets that mean. A lower band is met by widening saturation and value alone, so hue never
            has to widen (measured: [-2, -0.5] leaves both groups' hue width at ≈ 0.15); a higher one forces
            the fruits' hue ranges wide too ([0, 0.4]: every hue width ≈ 1, fruit accuracy 0.59).
        init_half_width: InstaAug's starting half-widths (hue, saturation, value); the families' defaults.
        lam_init, lam_rate, lam_max: the entropy controller's starting λ, multiplicative step per training step,
            and cap.
        augerino_weight: Augerino's width-norm weight.
        random_hue, random_saturation, random_value: the half-widths of the ``random`` baseline's ranges (the
            families' defaults).
        threads: torch's intra-op threads during the run (0 keeps torch's default). On a machine shared with
            other busy processes, ``--set threads=1`` avoids multi-threaded kernels waiting for a busy core.
            With several workers, 0 means 1 thread per worker.
        workers: worker processes, one run (method, seed) each at a time (0: one per available core). The
            README's figures were measured in one process (``workers=1``); other thread counts change them by
            float rounding.
        figure_per_class: test examples per class in the figure.
    """

    seed: int = 0
    seeds: int | tuple[int, ...] = 1
    n_train: int = 2800
    n_test: int = 1800
    image_size: int = 32
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=16, pretrain_epochs=3, batch_size=64, lr=3e-3, aug_lr=3e-3)
    )
    width: int = 16
    depth: int = 3
    aug_width: int = 16
    aug_depth: int = 3
    methods: tuple[str, ...] = METHODS.names
    entropy_range: tuple[float, float] = (-0.4, 0.0)
    init_half_width: tuple[float, ...] = (0.05, 0.1, 0.1)
    lam_init: float = 0.05
    lam_rate: float = 1.02
    lam_max: float = 1.0
    augerino_weight: float = 0.01
    random_hue: float = 0.15
    random_saturation: float = 0.4
    random_value: float = 0.4
    threads: int = 0
    workers: int = 0
    figure_per_class: int = 1
    #: Old key names still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "entropy_min": "entropy_range[0]",
        "entropy_max": "entropy_range[1]",
        **flat_train_aliases(),
    }

    @classmethod
    def quick(cls) -> Config:
        """A small variant for tests and smoke runs (seconds)."""
        train = dataclasses.replace(cls().train, epochs=2, pretrain_epochs=1)
        # workers=1: starting worker processes would cost more than these tiny runs.
        return cls(n_train=540, n_test=270, train=train, width=8, aug_width=8, workers=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        check_seeds(self)
        check_int_fields(self, ("n_train", "n_test", "width", "depth", "aug_width", "aug_depth"), least=1)
        check_int_fields(self, ("workers", "threads"), least=0)
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        for key in ("n_train", "n_test"):
            if getattr(self, key) < NUM_CLASSES:
                raise ValueError(f"{key} must be ≥ {NUM_CLASSES} (one example per class), got {getattr(self, key)}")
        if len(self.init_half_width) != len(TRANSFORMS):
            raise ValueError(f"init_half_width needs one entry per transform {TRANSFORMS}, got {self.init_half_width}")
        low, high = check_numbers(self.entropy_range, "entropy_range", 2)
        if len(self.entropy_range) != 2 or low > high:
            raise ValueError(
                f"entropy_range must be two numbers [Hmin, Hmax] with Hmin ≤ Hmax, got {self.entropy_range}"
            )
        object.__setattr__(self, "entropy_range", (low, high))

    def build_options(self) -> dict[str, Any]:
        """The keyword options of ``build_method`` for every method."""
        return {
            "random_ranges": {
                "hue": self.random_hue,
                "saturation": self.random_saturation,
                "value": self.random_value,
            },
            "augerino_weight": self.augerino_weight,
            "instaaug_options": {
                "width": self.aug_width,
                "depth": self.aug_depth,
                "entropy_range": self.entropy_range,
                "init_half_width": tuple(float(w) for w in self.init_half_width),
            },
            "controller_options": {
                "lam_init": self.lam_init,
                "rate": self.lam_rate,
                "lam_max": self.lam_max,
            },
        }


def make_splits(config: Config) -> tuple[ColourData, ColourData]:
    """The training and test sets of a run, from two independent streams of ``config.seed``."""
    train = make_colour_dataset(config.n_train, seed=2 * config.seed, size=config.image_size)
    test = make_colour_dataset(config.n_test, seed=2 * config.seed + 1, size=config.image_size)
    return train, test


def group_masks(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks (N,) of the shape-defined and the hue-defined examples of labels (N,)."""
    return {
        "shape_defined": torch.isin(labels, torch.tensor(SHAPE_DEFINED)),
        "hue_defined": torch.isin(labels, torch.tensor(HUE_DEFINED)),
    }


def range_metrics(low: torch.Tensor, high: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean interval width per transform and class group, for intervals low, high (N, 3) and labels (N,).

    Keys like ``hue_width_shape_defined``; also ``hue_width_ratio`` = hue-defined / shape-defined.
    """
    width = high - low
    metrics: dict[str, float] = {}
    for group, mask in group_masks(labels).items():
        for d, name in enumerate(TRANSFORMS):
            metrics[f"{name}_width_{group}"] = float(width[mask, d].mean())
    metrics["hue_width_ratio"] = metrics["hue_width_hue_defined"] / metrics["hue_width_shape_defined"]
    return metrics


def evaluate_method(
    config: Config, method: str, train_set: ColourData, test: ColourData, directory: Path | None
) -> dict[str, Any]:
    """Train ``method`` on ``train_set`` (seeded by ``config.seed``) and measure it on ``test``; returns its
    metrics. The run's log and checkpoint go to ``directory``, and a learned augmenter is saved there too."""
    # The same initial classifier for every method, so that only the augmentation differs.
    torch.manual_seed(config.seed)
    model = build_classifier("small_cnn", 3, NUM_CLASSES, width=config.width, depth=config.depth)
    aug, objective = build_method(method, TRANSFORMS, in_channels=3, **config.build_options())
    started = time.perf_counter()
    data = (train_set.images, train_set.labels)
    history = train(model, aug, objective, data, dataclasses.replace(config.train, seed=config.seed), out_dir=directory)
    seconds = time.perf_counter() - started
    if directory is not None and isinstance(aug, InstaAug):
        aug.save(directory)
    logits = predict(model.eval(), test.images)
    last = history[-1]
    metrics: dict[str, Any] = {
        "accuracy": accuracy(logits, test.labels),
        **{f"accuracy_{g}": accuracy(logits[m], test.labels[m]) for g, m in group_masks(test.labels).items()},
        "train_accuracy": last["train_accuracy"],
        "train_seconds": seconds,
    }
    if method != "none":
        low, high = learned_ranges(aug, test.images)
        metrics.update(range_metrics(low, high, test.labels))
    if method == "instaaug":
        metrics["final_lambda"] = last["lam"]
        metrics["final_train_entropy"] = last["entropy"]
    return metrics


def _train_job(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Train and evaluate one (method, seed) on that seed's data (``run_seeds``' job)."""
    config, method, seed, out = job
    config = dataclasses.replace(config, seed=seed)
    train_set, test = make_splits(config)
    return evaluate_method(config, method, train_set, test, run_dir(out, method, seed, config))


def figure_examples(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` examples of every class, in class order (shape-defined first)."""
    picks = [torch.nonzero(labels == k)[:per_class, 0] for k in range(NUM_CLASSES)]
    return torch.cat(picks)


#: What the experiment uses instead of ``--data`` (for its message).
_USES = "a dataset it generates (change it with --set n_train=..., --set image_size=...)"


def run(config: Config, out_dir: str | os.PathLike, data: str | None = None) -> dict[str, Any]:
    """Run the experiment; writes ``metrics.json``, ``colour_ranges.png`` and each learned augmenter.

    Args:
        config: the settings.
        out_dir: the output directory (created).
        data: must be None: the dataset is generated, there is nothing to load.
    Returns:
        the contents of ``metrics.json``.
    """
    return run_on_builtin_data("colour", _run, config, out_dir, data, uses=_USES, config_type=Config)


def _run(config: Config, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    seeds = training_seeds(config.seed, config.seeds)
    runs = run_config_seeds(_train_job, config, config.methods, out, description="colour runs", seeds=seeds)
    shown = next((m for m in ("instaaug", "augerino", "random") if m in config.methods), None)
    figure = None
    if shown is not None and is_main_process():  # under torchrun, rank 0 alone saved the augmenters
        figure = _ranges_figure(config, shown, seeds[0], out).name
    seconds = time.perf_counter() - started
    figures = [figure] if figure else []
    write_metrics(out, "colour", runs.results, config, figures=figures, per_seed=runs.per_seed, seconds=seconds)
    return {
        "experiment": "colour",
        "methods": runs.results,
        "config": dataclasses.asdict(config),
        "figures": figures,
        "seconds": seconds,
    }


def _augmenter(config: Config, method: str, seed: int, out: Path) -> Augmenter:
    """The augmenter of ``method`` at ``seed``: a learned one as saved by its run, the random baseline rebuilt (its
    ranges are fixed)."""
    if method == "random":
        return build_method(method, TRANSFORMS, in_channels=3, **config.build_options())[0]
    return InstaAug.load(run_dir(out, method, seed, config))


def _ranges_figure(config: Config, shown: str, seed: int, out: Path) -> Path:
    """The learned colour ranges of method ``shown`` at ``seed`` on a few test examples per class, beside
    Augerino's global range when ``shown`` is InstaAug."""
    test = make_splits(dataclasses.replace(config, seed=seed))[1]
    idx = figure_examples(test.labels, config.figure_per_class)
    low, high = learned_ranges(_augmenter(config, shown, seed, out), test.images[idx])
    reference = None
    if shown == "instaaug" and "augerino" in config.methods:
        ref_low, ref_high = learned_ranges(_augmenter(config, "augerino", seed, out), test.images[:1])
        reference = (ref_low[0], ref_high[0])
    return plot_colour_ranges(
        test.images[idx],
        low,
        high,
        TRANSFORMS,
        out / FIGURE_FILE,
        labels=[CLASS_NAMES[k] + (" (hue)" if k in HUE_DEFINED else " (shape)") for k in test.labels[idx]],
        reference=reference,
        reference_label="augerino (global)",
        title=f"learned colour ranges per test example ({shown})",
    )


#: The summary's columns: header, metric, width and decimals.
_COLUMNS = (
    ("acc", "accuracy", 6, 3),
    ("acc shape", "accuracy_shape_defined", 9, 3),
    ("acc hue", "accuracy_hue_defined", 7, 3),
    ("hue w shape", "hue_width_shape_defined", 11, 3),
    ("hue w hue", "hue_width_hue_defined", 9, 3),
    ("ratio", "hue_width_ratio", 6, 2),
)


def summary(metrics: dict[str, Any]) -> str:
    """A short table of accuracy and mean hue widths per method (mean ± std over seeds where there are several)."""
    several = any(values.get("seeds", 1) > 1 for values in metrics["methods"].values())

    def cell(values: dict[str, Any], key: str, width: int, decimals: int) -> str:
        value, std = values.get(key), values.get(f"{key}_std")
        if not isinstance(value, int | float):
            return "-".rjust(width)
        if several:
            text = f"{value:.{decimals}f}" + (f" ± {std:.{decimals}f}" if isinstance(std, int | float) else "")
            return text.rjust(width)
        return f"{value:{width}.{decimals}f}"

    widths = [w + (5 + d if several else 0) for _, _, w, d in _COLUMNS]  # room for " ± " and the deviation
    header = f"{'method':10s} " + " ".join(f"{c[0]:>{w}s}" for c, w in zip(_COLUMNS, widths, strict=True))
    lines = [header, "-" * len(header)]
    for method, values in metrics["methods"].items():
        cells = [cell(values, key, w, d) for (_, key, _, d), w in zip(_COLUMNS, widths, strict=True)]
        lines.append(f"{method:10s} " + " ".join(cells))
    if "instaaug" in metrics["methods"]:
        ratio = metrics["methods"]["instaaug"].get("hue_width_ratio")
        if isinstance(ratio, float):
            verdict = "met" if ratio <= 0.5 else "NOT met"
            lines.append(f"target hue-defined width ≤ 0.5 × shape-defined width (instaaug): {verdict} ({ratio:.2f})")
    return "\n".join(lines)
