"""`instaaug run lighting`: colour invariance under a change of light (the paper's RawFooT result, Tables 3–4 and
Figure D.1, at small scale).

Texture classes are regions of real photographs (``instaaug.data.lighting``); every method trains a fresh copy of
the same classifier (same initial weights per seed) on patches under the training light (a 4500 K black body, the
"D45-like" light) and is tested on patches of the other half of each region under all 46 lighting conditions,
rendered physically (sRGB → linear, × the illuminant per channel, clipped, → sRGB). Methods:

- ``none``: no augmentation;
- ``random_hsv``: fixed random hue/saturation/value jitter, the best of a sweep (``sweep``) chosen by accuracy on
  held-out *training* patches (``validation``: under all 46 lights, or under the training lights only), trained
  with the first seed; never on the test patches;
- ``random_gain``: fixed random per-channel gain (white-balance jitter, the ``gain`` family) of half-width
  ``random_gain``;
- ``augerino``: one learned global range over hue, saturation, value and contrast;
- ``instaaug``: InstaAug over hue, saturation, value and contrast (the paper's setting);
- ``instaaug_gain``: InstaAug over the same families and ``gain``;
- ``instaaug_local`` (not in the default run): InstaAug with spatially varying hue, saturation and value
  (``local_hue``, ``local_saturation``, ``local_value``) and contrast.

Each is measured without and with test-time augmentation (``tta_samples`` views from its own augmenter, logits
averaged; ``none`` has none, so its two numbers agree), on all conditions, the easy and the hard group
(``instaaug.data.lighting.LIGHT_GROUPS``: chromatic distance from the training light) and the training light; mean
and standard deviation over ``seeds`` (``per_seed_accuracy`` lists each seed's accuracy, ``per_seed`` each seed's
record). ``--set train_lights=1,2,4,8`` adds the Table 4 analogue: the same methods trained with the patches spread
over 1, 2, 4 and 8 lights (``TRAIN_LIGHT_ORDER``).

Every run (method, seed) is one job of ``parallel.run_seeds``, spread over ``workers`` processes: the first seed's
runs and the sweep first, then the other seeds' runs with the chosen ``random_hsv`` setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .. import plots
from ..augment import Augmenter, InstaAug
from ..data.lighting import (
    LIGHT_GROUPS,
    LIGHTS,
    TRAIN_LIGHT,
    TRAIN_LIGHT_ORDER,
    LightingData,
    light_gains,
    lit_copies,
    make_lighting_dataset,
    mean_hsv,
    render,
)
from ..data.photos import FOLDER_PHOTOS, PHOTOGRAPHS
from ..distributed import is_main_process
from ..models import build_classifier
from ..train import TrainConfig, accuracy, predict, train
from ..transforms import FAMILIES
from ..tta import TTAWrapper
from ..validation import check_int_fields
from .common import (
    build_method,
    flat_train_aliases,
    learned_ranges,
    run_on_builtin_data,
    write_metrics,
)
from .methods import MethodRegistry
from .parallel import best_setting, run_config_seeds, summarise_seeds, training_seeds

DESCRIPTION = "textures of real photographs under 46 lights: learned colour invariance (paper Tables 3-4, Fig. D.1)"
HSV = ("hue", "saturation", "value")
#: The families of Augerino and InstaAug (the paper's setting), of InstaAug with the per-channel gain, and of
#: InstaAug with spatially varying hue, saturation and value (the reference code's jitter; see ``transforms``).
COLOUR = (*HSV, "contrast")
COLOUR_GAIN = (*COLOUR, "gain")
COLOUR_LOCAL = ("local_hue", "local_saturation", "local_value", "contrast")
VALIDATION_MODES = ("all_lights", "train_lights")
RANGES_FIGURE = "lighting_ranges.png"
LIGHTS_FIGURE = "lighting_accuracy.png"
TABLE4_FIGURE = "lighting_train_lights.png"
#: Training time of a run relative to ``none``'s (quick config, 1 thread; 1 where absent): the runs start longest
#: first, so that no worker is left with a long run while the others idle at the end.
RELATIVE_COST = {"augerino": 1.5, "instaaug": 2.5, "instaaug_gain": 2.5}
#: The job name of ``random_hsv`` with the i-th ``sweep`` setting is ``sweep<i>``.
SWEEP = "sweep"
#: A job's plain accuracy under light j is its metric ``light<j>`` (taken out of the reported metrics).
LIGHT_KEY = "light{}"


def _instaaug(config: Config, families: tuple[str, ...]) -> tuple[Augmenter, nn.Module]:
    """InstaAug over ``families``, its entropy band the families' default one shifted by ``entropy_offset``."""
    widths = [FAMILIES[name] for name in families]
    low = sum(math.log(f.entropy_widths[0]) * len(f.params) for f in widths)
    high = sum(math.log(f.entropy_widths[1]) * len(f.params) for f in widths)
    instaaug_options = {
        "width": config.aug_width,
        "depth": config.aug_depth,
        "entropy_range": (low + config.entropy_offset, high + config.entropy_offset),
        "symmetric": config.symmetric,
    }
    controller_options = {"lam_init": config.lam_init, "rate": config.lam_rate, "lam_max": config.lam_max}
    return build_method(
        "instaaug", families, in_channels=3, instaaug_options=instaaug_options, controller_options=controller_options
    )


#: The methods, in reporting order; each builds ``(augmenter, objective)`` from the config (and, for
#: ``random_hsv``, the sweep setting's hue, saturation and value half-widths).
METHODS = MethodRegistry("lighting")


@METHODS.register("none", "no augmentation")
def _none(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return build_method("none", (), in_channels=3)


@METHODS.register("random_hsv", "random H/S/V jitter: the best setting of the sweep, chosen on validation patches")
def _random_hsv(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    if hsv is None:
        raise ValueError("random_hsv needs its hue, saturation and value half-widths (a sweep setting)")
    ranges = {name: w for name, w in zip(HSV, hsv, strict=True) if w > 0}
    return build_method("random", tuple(ranges), in_channels=3, random_ranges=ranges)


@METHODS.register("random_gain", "random per-channel gain (white-balance jitter) of half-width random_gain")
def _random_gain(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return build_method("random", ("gain",), in_channels=3, random_ranges={"gain": config.random_gain})


@METHODS.register("augerino", "one learned global range over hue, saturation, value and contrast (Augerino)")
def _augerino(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return build_method("augerino", COLOUR, in_channels=3, augerino_weight=config.augerino_weight)


@METHODS.register("instaaug", "InstaAug over hue, saturation, value and contrast (the paper's setting)")
def _instaaug_colour(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return _instaaug(config, COLOUR)


@METHODS.register("instaaug_gain", "InstaAug over the same families and the per-channel gain")
def _instaaug_gain(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return _instaaug(config, COLOUR_GAIN)


@METHODS.register("instaaug_local", "InstaAug with spatially varying hue, saturation and value, and contrast")
def _instaaug_local(config: Config, hsv: tuple[float, float, float] | None = None) -> tuple[Augmenter, nn.Module]:
    return _instaaug(config, COLOUR_LOCAL)


#: The methods of a default run: every method but ``instaaug_local``, an option reported separately in the README.
DEFAULT_METHODS = tuple(m for m in METHODS.names if m != "instaaug_local")


@dataclass(frozen=True)
class Config:
    """Settings of the lighting experiment (override any with ``--set key=value``).

    Attributes:
        seed: the data (patch positions); also the provenance seed.
        seeds: the training seeds (initial weights, shuffling, augmentation samples); results are mean ± std.
            An int N (``--seeds N``) means seeds 0 … N - 1 (``parallel.training_seeds`` from 0: the data seed
            ``seed`` does not shift them); stored as the tuple of seeds.
        photos: photographs of ``instaaug.data.photos.PHOTOGRAPHS``; each gives ``grid``² classes.
        grid, photo_size, patch, stripe, n_train, n_val, n_test, val_fraction: the dataset (see
            ``make_lighting_dataset``): per class ``n_train`` training, ``n_val`` validation (held-out right part of
            the training stripes) and ``n_test`` test patches (the other stripes).
        train_lights: numbers k of training lights (the first k of ``TRAIN_LIGHT_ORDER``; the training patches are
            spread evenly over them). The first value gives the main table; more values add the Table 4 analogue.
        methods: a subset of ``METHODS`` (default: all but ``instaaug_local``).
        sweep: the ``random_hsv`` sweep, flattened (hue, saturation, value) half-width triples.
        validation: what the sweep is chosen on, always held-out training patches: ``all_lights`` (each patch under
            one of the 46 lights in turn: the lights are known, the test patches are not) or ``train_lights``.
        random_gain: the half-width of the ``random_gain`` baseline (each channel × 1 + δ, δ ~ U[-w, w]).
        train: every run's training (``TrainConfig``, ``--set train.KEY=VALUE``; its seed is each run's):
            ``pretrain_epochs`` of f alone first, for every method.
        width, depth: the classifier (``small_cnn``); aug_width, aug_depth: InstaAug's φ.
        entropy_offset: nats added to both ends of each InstaAug method's default entropy band (the sum over its
            dimensions of log of the families' narrow and wide widths).
        symmetric: InstaAug's intervals centred on the identity ([-w, w] per input) instead of free [low, high]:
            free intervals drift to one side (e.g. only ever more saturated), so that the unaugmented test patch
            lies at the edge of what the classifier was trained on (seed 0, exploratory: accuracy under the
            training light 55 % with free intervals, 72 % symmetric, 72 % without augmentation).
        lam_init, lam_rate, lam_max: the entropy controller.
        augerino_weight: Augerino's width-norm weight.
        tta_samples: views per test input with test-time augmentation.
        threads: torch's intra-op threads per run (0: 1 when runs go to several worker processes, else torch's
            default); ``--set threads=1`` on a machine shared with other busy processes.
        workers: worker processes, one run (method, seed) each at a time (0: one per available core).
        figure_images: test patches in the Figure D.1 analogue (spread over brightness).
    """

    seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    photos: tuple[str, ...] = FOLDER_PHOTOS
    grid: int = 2
    photo_size: int = 256
    patch: int = 32
    stripe: int = 40
    n_train: int = 150
    n_val: int = 30
    n_test: int = 12
    val_fraction: float = 0.25
    train_lights: tuple[int, ...] = (1,)
    methods: tuple[str, ...] = DEFAULT_METHODS
    sweep: tuple[float, ...] = (0.05, 0.3, 0.3, 0.0, 0.2, 0.8, 0.1, 0.5, 0.5, 0.02, 0.1, 0.5)
    validation: str = "all_lights"
    random_gain: float = 0.5
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=8, pretrain_epochs=1, batch_size=64, lr=3e-3, aug_lr=3e-3)
    )
    width: int = 16
    depth: int = 3
    aug_width: int = 16
    aug_depth: int = 3
    entropy_offset: float = 0.0
    symmetric: bool = True
    lam_init: float = 0.05
    lam_rate: float = 1.02
    lam_max: float = 1.0
    augerino_weight: float = 0.01
    tta_samples: int = 4
    threads: int = 0
    workers: int = 0
    figure_images: int = 6
    #: The training keys' old flat names, still accepted (with a DeprecationWarning) by ``--set`` and config files.
    RENAMED_KEYS: ClassVar[dict[str, str]] = flat_train_aliases()

    @classmethod
    def quick(cls) -> Config:
        """A small variant for tests and smoke runs (seconds)."""
        return cls(
            seeds=(0,),
            photos=("china", "flower"),
            n_train=24,
            n_val=6,
            n_test=4,
            train=dataclasses.replace(cls().train, epochs=1, pretrain_epochs=0),
            width=8,
            aug_width=8,
            depth=2,
            aug_depth=2,
            sweep=(0.05, 0.3, 0.3, 0.0, 0.2, 0.8),
            tta_samples=2,
            figure_images=3,
            threads=1,  # tiny batches: on 2 busy cores 8 s with one thread, 33 s with two (measured)
            workers=1,  # starting worker processes would cost more than these tiny runs
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", METHODS.check(self.methods))
        ints = ("grid", "photo_size", "patch", "stripe", "n_train", "n_val", "n_test", "width")
        check_int_fields(self, (*ints, "depth", "aug_width", "aug_depth", "tta_samples", "figure_images"), least=1)
        check_int_fields(self, ("threads", "workers"), least=0)
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        # ``--seeds N``: seeds 0 … N - 1, as the README's figures were made (``seed`` is the data's seed).
        object.__setattr__(self, "seeds", training_seeds(0, self.seeds))
        unknown = [p for p in self.photos if p not in PHOTOGRAPHS]
        if unknown or not self.photos:
            raise ValueError(f"photos must be names from {sorted(PHOTOGRAPHS)}, got {list(self.photos)}")
        most = len(TRAIN_LIGHT_ORDER)
        if not self.train_lights or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= most for k in self.train_lights
        ):
            raise ValueError(f"train_lights must be numbers of training lights in 1 … {most}, got {self.train_lights}")
        if len(set(self.train_lights)) != len(self.train_lights):
            raise ValueError(f"train_lights must not repeat, got {self.train_lights}")
        if "random_hsv" in self.methods:
            if not self.sweep or len(self.sweep) % 3:
                raise ValueError(
                    f"sweep must hold (hue, saturation, value) half-width triples, flattened; got {self.sweep}"
                )
            for h, s, v in self.sweep_settings():
                if not (0 <= h <= 0.5 and 0 <= s <= 1 and 0 <= v <= 1) or h == s == v == 0:
                    raise ValueError(
                        f"sweep setting {(h, s, v)}: need 0 ≤ hue ≤ 0.5, 0 ≤ saturation, value ≤ 1, not all 0"
                    )
        if self.validation not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {self.validation!r}")
        if not 0 < self.random_gain <= 1:
            raise ValueError(f"random_gain must lie in (0, 1], got {self.random_gain}")
        for key in ("lam_init", "lam_rate", "lam_max", "augerino_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{key} must be a number > 0, got {value!r}")
        if not math.isfinite(self.entropy_offset):
            raise ValueError(f"entropy_offset must be finite, got {self.entropy_offset}")

    def sweep_settings(self) -> list[tuple[float, float, float]]:
        """The ``sweep`` as (hue, saturation, value) half-width triples."""
        values = [float(v) for v in self.sweep]
        return [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]

    def data(self) -> LightingData:
        """The run's patches (under the training light), from ``seed``."""
        return make_lighting_dataset(
            photos=self.photos,
            grid=self.grid,
            photo_size=self.photo_size,
            patch=self.patch,
            stripe=self.stripe,
            n_train=self.n_train,
            n_val=self.n_val,
            n_test=self.n_test,
            val_fraction=self.val_fraction,
            seed=self.seed,
        )


def _fit(
    config: Config,
    method: str,
    train_data: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    seed: int,
    out_dir: Path,
    hsv: tuple[float, float, float] | None = None,
) -> tuple[nn.Module, Augmenter, dict[str, Any], float]:
    """Train ``method`` with training seed ``seed``: (model, augmenter, last epoch's record, seconds)."""
    torch.manual_seed(seed)  # the same initial classifier for every method of a seed
    model = build_classifier("small_cnn", 3, num_classes, width=config.width, depth=config.depth)
    aug, objective = METHODS.build(method, config, hsv)
    started = time.perf_counter()
    history = train(model, aug, objective, train_data, dataclasses.replace(config.train, seed=seed), out_dir=out_dir)
    seconds = time.perf_counter() - started
    if isinstance(aug, InstaAug):  # the learned ones (Augerino is one), for the figure
        aug.save(out_dir)
    return model.eval(), aug.eval(), history[-1], seconds


def _lit_by_turns(images: torch.Tensor, lights: tuple[int, ...]) -> torch.Tensor:
    """Images (N, 3, H, W), image i under light ``lights[i mod len(lights)]``."""
    return lit_copies(images, lights)


@torch.no_grad()
def per_light_accuracy(
    model: nn.Module,
    aug: Augmenter | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    tta_samples: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accuracy (L,) of ``model`` on images (N, 3, H, W) under each of the L = 46 lights, and with test-time
    augmentation by ``aug`` (``tta_samples`` views, logits averaged; None without ``aug``)."""
    gains = light_gains()
    plain, tta = [], []
    wrapper = TTAWrapper(model, aug, n_copies=tta_samples, chunk_size=None) if aug is not None else None
    generator = torch.Generator().manual_seed(seed)
    # Light by light: the lit copies of all 46 lights at once would hold 46 × N images.
    for gain in gains:
        lit = render(images, gain)
        plain.append(accuracy(predict(model, lit, batch_size=1024), labels))
        if wrapper is not None:
            wrapper.eval()
            logits = torch.cat([wrapper(xb, generator=generator) for xb in lit.split(256)])
            tta.append(accuracy(logits, labels))
    return torch.tensor(plain), (torch.tensor(tta) if wrapper is not None else None)


def _group_metrics(per_light: torch.Tensor, suffix: str = "") -> dict[str, float]:
    """Mean accuracy over all lights, the easy and the hard group, and the training light, from (L,)."""
    return {
        f"accuracy{suffix}": float(per_light.mean()),
        f"accuracy_easy{suffix}": float(per_light[list(LIGHT_GROUPS["easy"])].mean()),
        f"accuracy_hard{suffix}": float(per_light[list(LIGHT_GROUPS["hard"])].mean()),
        f"accuracy_train_light{suffix}": float(per_light[TRAIN_LIGHT]),
    }


def _evaluate(
    config: Config,
    model: nn.Module,
    aug: Augmenter,
    method: str,
    data: LightingData,
    seed: int,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The metrics of one trained run, with its per-light accuracies (L,) without and with TTA."""
    plain, tta = per_light_accuracy(
        model, aug if method != "none" else None, data.test_images, data.test_labels, config.tta_samples, seed
    )
    tta = plain if tta is None else tta
    metrics = {**_group_metrics(plain), **_group_metrics(tta, "_tta")}
    if method != "none":
        low, high = learned_ranges(aug, data.test_images)
        for d, name in enumerate(aug.stack.param_names):
            metrics[f"{name}_low"] = float(low[:, d].mean())
            metrics[f"{name}_high"] = float(high[:, d].mean())
            metrics[f"{name}_width"] = float((high[:, d] - low[:, d]).mean())
    return metrics, plain, tta


def _method_of(config: Config, name: str) -> tuple[str, tuple[float, float, float] | None]:
    """A job's method and ``random_hsv`` half-widths: ``sweep<i>`` is ``random_hsv`` with the i-th sweep setting."""
    if name.startswith(SWEEP):
        return "random_hsv", config.sweep_settings()[int(name[len(SWEEP) :])]
    return name, None


def _run_dir(config: Config, out: Path, name: str, seed: int) -> Path:
    """Where a job's run writes its log and augmenter: the sweep's runs (first seed) under ``sweep/``."""
    if name.startswith(SWEEP):
        if seed == config.seeds[0]:
            return out / SWEEP / name
        return out / "random_hsv" / f"seed{seed}"
    return out / name / f"seed{seed}"


def _training_set(data: LightingData, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training patches (N, 3, H, W) spread over the first ``k`` training lights, and their labels (N,)."""
    lights = TRAIN_LIGHT_ORDER[:k]
    return (_lit_by_turns(data.train_images, lights) if k > 1 else data.train_images, data.train_labels)


def _validation_images(config: Config, data: LightingData, k: int) -> torch.Tensor:
    """The held-out training patches (N, 3, H, W) under the lights ``validation`` names, by turns."""
    shown = TRAIN_LIGHT_ORDER[:k] if config.validation == "train_lights" else tuple(range(len(LIGHTS)))
    return _lit_by_turns(data.val_images, shown)


def _run_one(job: tuple[Config, str, int, str]) -> dict[str, float]:
    """Train and evaluate one run of ``parallel.run_seeds``: method ``name`` (or ``sweep<i>``) with training seed
    ``seed`` on the first ``config.train_lights[0]`` training lights (the caller passes one number at a time).

    Returns its metrics, then the plain accuracy under each light j as ``light<j>``; a learned augmenter is saved
    in its run directory (``_run_dir``, then the method's kind), where the figure loads the first seed's from.
    """
    config, name, seed, out = job
    method, hsv = _method_of(config, name)
    data = config.data()
    k = config.train_lights[0]
    run_dir = _run_dir(config, Path(out), name, seed)
    model, aug, last, seconds = _fit(config, method, _training_set(data, k), data.num_classes, seed, run_dir, hsv)
    metrics, plain, _ = _evaluate(config, model, aug, method, data, seed)
    val_x = _validation_images(config, data, k)
    metrics["val_accuracy"] = accuracy(predict(model, val_x, batch_size=1024), data.val_labels)
    metrics["train_accuracy"] = float(last["train_accuracy"])
    metrics["train_seconds"] = seconds
    if method.startswith("instaaug"):
        metrics["final_lambda"] = float(last["lam"])
        metrics["final_train_entropy"] = float(last["entropy"])
    metrics.update({LIGHT_KEY.format(j): value for j, value in enumerate(plain.tolist())})
    return metrics


def _runs(config: Config, names: list[str], seeds: tuple[int, ...], out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every (name, seed) run (``_run_one``) over the worker processes: name → one record per seed."""
    if not names or not seeds:
        return {}
    runs = run_config_seeds(
        _run_one,
        config,
        names,
        out,
        description=f"lighting runs ({config.train_lights[0]} training lights)",
        seeds=seeds,
        cost=RELATIVE_COST,
    )
    return runs.per_seed


def _run_lights(config: Config, k: int, out: Path) -> dict[str, Any]:
    """Every method and seed with the first ``k`` training lights: per-method summaries, their per-seed records,
    per-light accuracies (mean over seeds) and the sweep.

    The sweep's runs (``random_hsv`` with each setting, first seed) go with the other methods' first-seed runs;
    the setting with the best validation accuracy is ``random_hsv``, whose first-seed run is the sweep's."""
    config = dataclasses.replace(config, train_lights=(k,))
    first, rest = config.seeds[:1], config.seeds[1:]
    others = [m for m in config.methods if m != "random_hsv"]
    sweeping = "random_hsv" in config.methods
    sweep_names = [f"{SWEEP}{i}" for i in range(len(config.sweep_settings()))] if sweeping else []
    records = _runs(config, [*others, *sweep_names], first, out)
    chosen = best_setting({n: records[n][0] for n in sweep_names}, sweep_names, "val_accuracy") if sweeping else ""
    later = _runs(config, [*others, *([chosen] if sweeping else [])], rest, out)
    runs_of = {m: records[m] + later.get(m, []) for m in others}
    if sweeping:
        runs_of["random_hsv"] = records[chosen] + later.get(chosen, [])
    light_keys = [LIGHT_KEY.format(j) for j in range(len(LIGHTS))]
    results: dict[str, Any] = {}
    per_seed: dict[str, list[dict[str, Any]]] = {}
    per_light: dict[str, list[float]] = {}
    for method in config.methods:
        per_seed[method] = [{key: v for key, v in r.items() if key not in light_keys} for r in runs_of[method]]
        results[method] = summarise_seeds([{key: v for key, v in r.items() if key != "seed"} for r in per_seed[method]])
        results[method]["per_seed_accuracy"] = [r["accuracy"] for r in per_seed[method]]
        if method == "random_hsv":
            hue, saturation, value = config.sweep_settings()[sweep_names.index(chosen)]
            results[method]["chosen"] = {"hue": hue, "saturation": saturation, "value": value}
        # In float32, as the accuracies themselves: the mean over seeds as it was computed before the jobs.
        per_light[method] = torch.tensor([[r[key] for key in light_keys] for r in runs_of[method]]).mean(0).tolist()
    sweep = None
    if sweeping:
        sweep = [
            {"hue": h, "saturation": s, "value": v, "val_accuracy": records[name][0]["val_accuracy"]}
            for name, (h, s, v) in zip(sweep_names, config.sweep_settings(), strict=True)
        ]
    return {"methods": results, "per_seed": per_seed, "per_light": per_light, "sweep": sweep}


def _first_seed_augs(config: Config, out: Path) -> dict[str, Augmenter]:
    """The first seed's learned augmenters of ``augerino`` and ``instaaug`` (those the figure shows), from disk."""
    seed = config.seeds[0]
    return {
        method: Augmenter.load(_run_dir(config, out, method, seed))
        for method in ("augerino", "instaaug")
        if method in config.methods
    }


def targets(methods: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, measured: name → {"met", "value"} (value: the margin, in accuracy fractions)."""
    found: dict[str, dict[str, Any]] = {}

    def margin(a: str, b: str, key: str = "accuracy") -> float | None:
        if a in methods and b in methods:
            return float(methods[a][key] - methods[b][key])
        return None

    checks = (
        ("instaaug_vs_random_hsv_all", margin("instaaug", "random_hsv"), 0.01),
        ("instaaug_vs_random_hsv_hard", margin("instaaug", "random_hsv", "accuracy_hard"), None),
        ("instaaug_vs_augerino", margin("instaaug", "augerino"), 0.0),
        ("instaaug_gain_vs_random_gain", margin("instaaug_gain", "random_gain"), 0.0),
    )
    all_margin = checks[0][1]
    for name, value, threshold in checks:
        if value is None:
            continue
        if threshold is None:  # a larger gain on the hard group than on all conditions
            met = all_margin is not None and value > all_margin and all_margin >= 0.01
        else:
            met = value >= threshold if threshold > 0 else value > threshold
        found[name] = {"met": bool(met), "value": value}
    return found


#: What the experiment uses instead of ``--data`` (for its message).
_USES = (
    "a dataset it generates from photographs installed packages ship"
    " (change it with --set photos=..., --set n_train=...)"
)


def run(config: Config, out_dir: str | os.PathLike, data: str | None = None) -> dict[str, Any]:
    """Run the experiment; writes ``metrics.json``, the figures and every run's training log.

    Args:
        config: the settings.
        out_dir: the output directory (created).
        data: must be None: the dataset is generated from photographs installed packages ship.
    Returns:
        the contents of ``metrics.json``.
    """
    return run_on_builtin_data("lighting", _run, config, out_dir, data, uses=_USES, config_type=Config)


def _run(config: Config, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    by_k: dict[int, dict[str, Any]] = {}
    for k in config.train_lights:
        by_k[k] = _run_lights(config, k, _lights_dir(config, out, k))
    main = by_k[config.train_lights[0]]
    figures = [_lights_figure(main["per_light"], out / LIGHTS_FIGURE).name]
    shown = None
    if is_main_process():  # under torchrun, rank 0 alone saved the augmenters
        augs = _first_seed_augs(config, _lights_dir(config, out, config.train_lights[0]))
        shown = _ranges_figure(config, augs, config.data(), out / RANGES_FIGURE)
    if shown is not None:
        figures.append(shown["figure"])
    extra: dict[str, Any] = {
        "train_lights": config.train_lights[0],
        "sweep": main["sweep"],
        "per_light": main["per_light"],
        "lights": [
            {"id": light.id, "name": light.name, "gain": list(light.gain), "group": light.group} for light in LIGHTS
        ],
        "targets": targets(main["methods"]),
        "per_seed": main["per_seed"],
    }
    if shown is not None:
        extra["figure_d1"] = shown["stats"]
    if len(config.train_lights) > 1:
        extra["table4"] = {str(k): result["methods"] for k, result in by_k.items()}
        extra["table4_sweeps"] = {str(k): result["sweep"] for k, result in by_k.items()}
        extra["table4_ordering"] = _table4_ordering(extra["table4"])
        figures.append(_table4_figure(extra["table4"], out / TABLE4_FIGURE).name)
    seconds = time.perf_counter() - started
    write_metrics(out, "lighting", main["methods"], config, figures=figures, seconds=seconds, **extra)
    return {
        "experiment": "lighting",
        "methods": main["methods"],
        "config": dataclasses.asdict(config),
        "figures": figures,
        "seconds": seconds,
        **extra,
    }


def _lights_dir(config: Config, out: Path, k: int) -> Path:
    """The runs' directory for ``k`` training lights (``lights<k>/`` when several numbers are run)."""
    return out / (f"lights{k}" if len(config.train_lights) > 1 else "")


def _table4_ordering(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether InstaAug beats the best random H/S/V setting for every number of training lights, with margins."""
    margins = {
        k: float(m["instaaug"]["accuracy"] - m["random_hsv"]["accuracy"])
        for k, m in table.items()
        if "instaaug" in m and "random_hsv" in m
    }
    return {"instaaug_minus_random_hsv": margins, "met": bool(margins) and all(v > 0 for v in margins.values())}


def _lights_figure(per_light: dict[str, list[float]], path: Path) -> Path:
    """Accuracy per lighting condition (mean over seeds) per method, easy lights shaded."""
    fig, ax = plots.plt.subplots(figsize=(12, 3.6))
    ids = [light.id for light in LIGHTS]
    for i in LIGHT_GROUPS["easy"]:
        ax.axvspan(ids[i] - 0.5, ids[i] + 0.5, color="0.92", lw=0)
    for method, values in per_light.items():
        ax.plot(ids, values, marker="o", ms=3, lw=1, label=method)
    ax.set_xticks(ids)
    ax.set_xticklabels(ids, fontsize=6)
    ax.set_xlim(0.5, len(ids) + 0.5)
    ax.set_xlabel("lighting condition (id; grey: easy group, 1: the training light)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, ncol=3, frameon=False)
    ax.set_title("accuracy under each light (mean over seeds)", fontsize=10)
    return plots.save_figure(fig, path)


def _table4_figure(table: dict[str, dict[str, Any]], path: Path) -> Path:
    """Accuracy over all conditions against the number of training lights, per method (± std over seeds)."""
    fig, ax = plots.plt.subplots(figsize=(5, 3.4))
    ks = [int(k) for k in table]
    methods = list(next(iter(table.values())))
    for method in methods:
        mean = [table[str(k)][method]["accuracy"] for k in ks]
        std = [table[str(k)][method]["accuracy_std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("training lights")
    ax.set_ylabel("accuracy, all 46 lights")
    ax.legend(fontsize=7, frameon=False)
    return plots.save_figure(fig, path)


def _ranges_figure(config: Config, augs: dict[str, Augmenter], data: LightingData, path: Path) -> dict[str, Any] | None:
    """The Figure D.1 analogue: per test patch (spread over brightness), InstaAug's learned H, S, V, contrast
    ranges beside the patch's own mean H, S, V, with Augerino's global range beneath; and how InstaAug's value
    range follows brightness (the correlation of each patch's mean V with its range's centre, all test patches)."""
    if "instaaug" not in augs:
        return None
    aug = augs["instaaug"]
    names = aug.stack.param_names
    hsv = mean_hsv(data.test_images)
    low, high = learned_ranges(aug, data.test_images)
    v_col = names.index("value")
    centre = (low[:, v_col] + high[:, v_col]) / 2
    width = high[:, v_col] - low[:, v_col]
    dark, bright = hsv[:, 2] <= hsv[:, 2].quantile(0.25), hsv[:, 2] >= hsv[:, 2].quantile(0.75)
    stats = {
        "value_centre_vs_brightness_corr": _correlation(hsv[:, 2], centre),
        "value_width_vs_brightness_corr": _correlation(hsv[:, 2], width),
        "value_centre_darkest_quartile": float(centre[dark].mean()),
        "value_centre_brightest_quartile": float(centre[bright].mean()),
        "value_width_darkest_quartile": float(width[dark].mean()),
        "value_width_brightest_quartile": float(width[bright].mean()),
    }
    order = torch.argsort(hsv[:, 2])
    picks = order[torch.linspace(0, len(order) - 1, config.figure_images).round().long()]
    reference = None
    if "augerino" in augs:
        ref_low, ref_high = learned_ranges(augs["augerino"], data.test_images[:1])
        reference = (ref_low[0], ref_high[0])
        stats["augerino_value_range"] = [float(ref_low[0, v_col]), float(ref_high[0, v_col])]
    labels = [
        f"{data.class_names[int(data.test_labels[i])]}\nH {h:.2f} S {s:.2f} V {v:.2f}"
        for i, (h, s, v) in zip(picks.tolist(), hsv[picks].tolist(), strict=True)
    ]
    figure = plots.plot_colour_ranges(
        data.test_images[picks],
        low[picks],
        high[picks],
        names,
        path,
        labels=labels,
        reference=reference,
        reference_label="augerino (global)",
        title="learned colour ranges per test patch (instaaug), by the patch's mean H, S, V",
    )
    return {"figure": figure.name, "stats": stats}


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson's correlation of a, b (N,); None when either is constant (symmetric intervals: centre 0)."""
    if float(a.std()) < 1e-8 or float(b.std()) < 1e-8:
        return None
    return float(torch.corrcoef(torch.stack((a, b)))[0, 1])


def summary(metrics: dict[str, Any]) -> str:
    """Accuracy ± std per method (all lights, with TTA, easy, hard, training light) and the targets."""
    header = f"{'method':14s} {'all':>13s} {'all (TTA)':>13s} {'easy':>13s} {'hard':>13s} {'train light':>13s}"
    lines = [header, "-" * len(header)]

    def cell(values: dict[str, Any], key: str) -> str:
        if not isinstance(values.get(key), int | float):
            return "-".rjust(13)
        return f"{100 * values[key]:6.1f} ± {100 * values.get(key + '_std', 0.0):4.1f}"

    for method, values in metrics["methods"].items():
        keys = ("accuracy", "accuracy_tta", "accuracy_easy", "accuracy_hard", "accuracy_train_light")
        lines.append(f"{method:14s} " + " ".join(cell(values, k) for k in keys))
    for name, result in metrics.get("targets", {}).items():
        verdict = "met" if result["met"] else "NOT met"
        lines.append(f"target {name}: {verdict} ({100 * result['value']:+.1f} points)")
    table = metrics.get("table4")
    if table:
        lines.append("accuracy (all lights) by number of training lights:")
        for k, methods in table.items():
            row = ", ".join(f"{m} {100 * v['accuracy']:.1f}" for m, v in methods.items())
            lines.append(f"  {k}: {row}")
    return "\n".join(lines)
