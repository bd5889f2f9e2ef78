"""Benchmarks: costs of learned augmentation measured as ratios, side by side in one process.

Absolute times depend on the machine and its load; the ratio of two workloads timed alternately in the same process
(one call of each per round, median over rounds) cancels most of that. ``instaaug bench`` runs them all and writes
``bench.json``. The headline training-step and memory figures use the papers' setting: a PreAct ResNet-18
classifier (the same on both sides) beside the library's small default φ.

- ``train_step_ratio_uniform`` (and ``_slim``): a joint training step with InstaAug (uniform rotation + colour
  ranges) ÷ one with random augmentation of the same families, PreAct ResNet-18 on RGB 32×32 (CIFAR-like);
- ``train_step_ratio_crop`` (and ``_slim``): LRP crops ÷ random crops, PreAct ResNet-18 on RGB 64×64
  (Tiny-ImageNet-like; candidates from two φ stages plus the whole image, as in the paper);
- ``peak_memory_ratio``: peak memory of InstaAug training ÷ random-augmentation training, the setting of
  ``train_step_ratio_uniform``;
- the same figures with the small CNN of our own experiments as the classifier (as small as φ itself: close to the
  worst case) under ``..._small_classifier`` keys;
- ``augment_throughput_vs_kornia_<B>x<size>`` (and ``..._backward``, forward + backward to the images): our
  batched per-sample crop + rotation + colour jitter ÷ the equivalent ``kornia.augmentation`` pipeline, in images
  per second (> 1: ours is faster), at batch 64 / 32 px and batch 128 / 64 px;
- ``colour_throughput_vs_kornia`` and ``colour_closed_form_vs_round_trip``: the colour families alone, ours ÷
  kornia's ``ColorJitter`` and ÷ an HSV round trip with the same parameters;
- ``tta_auto_speedup`` and ``tta_batched_speedup`` (and ``..._resnet18``): n = 10 test-time views as a loop of n
  forwards ÷ ``TTAWrapper`` with its default chunking (max(B, n) views per forward) and with all views in one
  forward (time ratios; > 1: the wrapper is faster), with the small CNN and with a PreAct ResNet-18;
- ``channels_last_step_ratio_lrp`` and ``_random``: a training step of the crop experiment with channels-last
  convolution weights ÷ the default layout (``TrainConfig.channels_last``); ``channels_last_step_ratio_uniform_*``
  the same for the uniform small-classifier steps;
- ``train_step_ratio_uniform_{default,phi16,nchw_phi,global,two_pass}_small_classifier``: where the extra time of
  a small-classifier step goes (``uniform_breakdown``), including the paper's two-pass step;
- ``tta_vs_ttach_speedup`` (and ``tta_instaaug_...``): ``TTAWrapper`` ÷ ttach's wrapper, 8 views (only where the
  optional ``ttach`` package is installed);
- ``scaling`` (and ``scaling_small_classifier``): step times of InstaAug, random augmentation and the paper's
  two-pass step at several batch and image sizes (the small classifier over ``SCALING_GRID``: batch 16 / 64 / 256
  × image 32 / 64 / 128; the ResNet-18 over that grid on CUDA only).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import Augmenter, InstaAug
from .baselines import NoAugment, RandomAugment, RandomCrop
from .controller import EntropyController
from .io import write_json
from .models import build_classifier
from .objective import InstaAugObjective, TaskObjective
from .step import cross_entropy_per_view, make_optimisers, train_step
from .train import to_channels_last
from .transforms import adjust_contrast
from .tta import TTAWrapper
from .userdata import load_user_data, loader_throughput
from .validation import trusted_inputs

#: The families of the uniform benchmarks: rotation and colour.
UNIFORM_TRANSFORMS = ("rotation", "hue", "saturation", "value", "contrast")
#: Random-augmentation half-widths of the kornia comparison (rotation ±90°, colour jitter 0.4, hue ±0.15 turns).
KORNIA_RANGES = {"rotation": torch.pi / 2, "hue": 0.15, "saturation": 0.4, "value": 0.4, "contrast": 0.4}
#: The classifier of the headline figures: the papers' PreAct ResNet-18 (width 64).
PAPER_CLASSIFIER = "preact_resnet18"
#: The small CNN of our own experiments (width 16, 3 stages), as small as the default φ.
SMALL_CLASSIFIER = "small_cnn"
#: Key suffix of the figures measured with ``SMALL_CLASSIFIER``.
SMALL_SUFFIX = "_small_classifier"
#: The InstaAug variants of the uniform benchmarks: the default φ, a slim φ, and no φ network at all.
UNIFORM_INSTAAUG: dict[str, dict[str, Any]] = {
    "instaaug": {},
    "instaaug_slim": {"width": 8},
    "instaaug_global": {"mode": "global"},
}
#: Further InstaAug variants, for where a small-classifier step's extra time goes (``uniform_breakdown``): φ at
#: 16 px (a quarter of the default's pixels at 32 px) and φ in the default NCHW layout on the CPU.
UNIFORM_PHI_VARIANTS: dict[str, dict[str, Any]] = {
    "instaaug_phi16": {"phi_size": 16},
    "instaaug_nchw_phi": {},
}
#: Every method ``uniform_step`` builds: the InstaAug variants, the paper's two-pass step and random augmentation.
UNIFORM_METHODS = (*UNIFORM_INSTAAUG, *UNIFORM_PHI_VARIANTS, "two_pass", "random")
#: The scaling grid of issue 15: batch 16 / 64 / 256 × image 32 / 64 / 128 px.
SCALING_GRID = tuple((b, s) for b in (16, 64, 256) for s in (32, 64, 128))


def make_train_step(model: nn.Module, aug: Augmenter, objective: nn.Module, lr: float = 1e-3) -> Callable:
    """``instaaug.step.train_step`` (the step ``train()`` runs: augment, one classifier forward and backward, the
    objective, the optimisers of ``make_optimisers``) as a closure ``step(x (B, C, H, W), y (B,))``, with inputs
    validated once (no per-step value checks), as ``train()`` does for tensors."""
    optimisers = make_optimisers(model, aug, lr=lr, aug_lr=lr)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, aug, objective, optimisers, x, y, checks=trusted_inputs)

    return step


def make_two_pass_step(model: nn.Module, aug: Augmenter, objective: nn.Module, lr: float = 1e-3) -> Callable:
    """The InstaAug paper's step (its reference code), as a baseline: two passes, φ and f run in each.

    Pass 1 trains f: views sampled without a graph to φ, f's forward and backward, f's optimiser. Pass 2 trains φ:
    views sampled again, f's forward and a backward through f to the views with f's weights frozen (the cheapest
    form of that pass: no gradients of f are formed), the objective, φ's optimiser. The optimisers are
    ``make_optimisers``'s, as in ``make_train_step``. Returns ``step(x (B, C, H, W), y (B,))``."""
    optimisers = make_optimisers(model, aug, lr=lr, aug_lr=lr)
    f_params = [p for p in model.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with trusted_inputs():
            with torch.no_grad():
                views = aug(x)
            loss = cross_entropy_per_view(model(views.images), views.repeat(y)).mean()
        optimisers["f"].zero_grad(set_to_none=True)
        loss.backward()
        optimisers["f"].step()
        for p in f_params:
            p.requires_grad_(False)
        try:
            with trusted_inputs():
                out = aug(x)
            terms = objective(cross_entropy_per_view(model(out.images), out.repeat(y)), out)
            optimisers["phi"].zero_grad(set_to_none=True)
            terms.loss.backward()
            optimisers["phi"].step()
        finally:
            for p in f_params:
                p.requires_grad_(True)

    return step


def compare_calls(calls: dict[str, Callable[[], Any]], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of every zero-argument callable, timed round-robin (one call of each per round,
    the order rotating between rounds) after ``warmup`` rounds. CUDA work is synchronised before each clock read."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        for call in calls.values():
            call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        # Rotating the order spreads any effect of going first or second (caches, frequency) over all of them.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync()
            started = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def compare_steps(
    steps: dict[str, Callable], x: torch.Tensor, y: torch.Tensor, repeats: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of every training step ``step(x, y)``, timed round-robin after a warm-up."""
    return compare_calls({name: (lambda s=step: s(x, y)) for name, step in steps.items()}, repeats, warmup)


def _batch(batch: int, channels: int, size: int, device: str, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def _classifier(
    channels: int, device: str, network: str = SMALL_CLASSIFIER, width: int | None = None, depth: int = 3
) -> nn.Module:
    """A freshly seeded classifier with 10 classes: ``small_cnn`` (width 16 unless given, ``depth`` stages) or
    ``preact_resnet18`` (width 64 unless given)."""
    torch.manual_seed(0)
    if network == SMALL_CLASSIFIER:
        return build_classifier(network, channels, 10, width=width or 16, depth=depth).to(device)
    return build_classifier(network, channels, 10, width=width or 64).to(device)


def _suffix(classifier: str) -> str:
    return "" if classifier == PAPER_CLASSIFIER else SMALL_SUFFIX


def uniform_steps(
    device: str = "cpu",
    methods: Sequence[str] = ("instaaug", "random"),
    classifier: str = PAPER_CLASSIFIER,
    classifier_width: int | None = None,
) -> dict[str, Callable]:
    """Training steps of InstaAug (uniform rotation + colour) and of random augmentation of the same families,
    each with its own copy of the same classifier (``classifier``: ``preact_resnet18`` or ``small_cnn``, of
    ``classifier_width`` when given: narrower only to check that the benchmarks run)."""
    return {method: uniform_step(method, device, classifier, classifier_width) for method in methods}


def uniform_step_ratio(
    batch: int = 32,
    size: int = 32,
    repeats: int = 10,
    device: str = "cpu",
    classifier: str = PAPER_CLASSIFIER,
    warmup: int = 2,
    classifier_width: int | None = None,
) -> dict[str, Any]:
    """Seconds per training step with InstaAug (uniform rotation + colour) and with random augmentation, same
    classifier and batch of RGB images → ``train_step_ratio_uniform`` (the library's default φ: small CNN of width
    16, 3 stages), ``train_step_ratio_uniform_slim`` (φ of width 8) and ``train_step_ratio_uniform_global`` (no φ
    network: the cost of the transforms' backward pass alone); keys end in ``_small_classifier`` when
    ``classifier`` is the small CNN."""
    x, y = _batch(batch, 3, size, device)
    steps = uniform_steps(device, (*UNIFORM_INSTAAUG, "random"), classifier, classifier_width)
    seconds = compare_steps(steps, x, y, repeats=repeats, warmup=warmup)
    end = _suffix(classifier)
    return {
        f"train_step_ratio_uniform{end}": seconds["instaaug"] / seconds["random"],
        f"train_step_ratio_uniform_slim{end}": seconds["instaaug_slim"] / seconds["random"],
        f"train_step_ratio_uniform_global{end}": seconds["instaaug_global"] / seconds["random"],
        f"seconds_uniform_instaaug{end}": seconds["instaaug"],
        f"seconds_uniform_instaaug_slim{end}": seconds["instaaug_slim"],
        f"seconds_uniform_instaaug_global{end}": seconds["instaaug_global"],
        f"seconds_uniform_random{end}": seconds["random"],
        f"uniform_batch{end}": batch,
        f"uniform_image_size{end}": size,
        f"uniform_classifier{end}": classifier,
    }


def crop_step_ratio(
    batch: int = 16,
    size: int = 64,
    repeats: int = 10,
    device: str = "cpu",
    warmup: int = 2,
    classifier_width: int | None = None,
) -> dict[str, Any]:
    """Seconds per training step with LRP crops (φ and f trained jointly, n_copies = 1) and with random crops
    (side uniform in [0.5, 1]) in the paper's Tiny-ImageNet setting, small: PreAct ResNet-18 on RGB images of
    ``size`` (64), the same classifier on both sides.

    φ is the library's default crop φ (small CNN of width 16, 3 stages); the candidate boxes are the units of its
    stages 1 and 2 (16×16 and 8×8 cells at 64×64) plus the whole image, with the paper's initial level biases
    (0, 1, 3) → ``train_step_ratio_crop``; the same with φ of width 8 → ``train_step_ratio_crop_slim``.
    ``classifier_width`` narrows the ResNet, only to check that the benchmark runs.
    """
    x, y = _batch(batch, 3, size, device)

    def lrp_step(width: int) -> tuple[Callable, int]:
        aug = InstaAug(
            ("crop",),
            phi_size=size,
            in_channels=3,
            levels=(1, 2),
            global_crop=True,
            level_bias=(0.0, 1.0, 3.0),
            box_scale=1.0,
            centre_jitter=0.0,
            size_jitter=0.0,
            width=width,
        )
        aug = aug.to(device)
        objective = InstaAugObjective(EntropyController(*aug.entropy_range)).to(device)
        classifier = _classifier(3, device, PAPER_CLASSIFIER, classifier_width)
        return make_train_step(classifier, aug, objective), aug.num_candidates

    lrp, candidates = lrp_step(16)
    seconds = compare_steps(
        {
            "lrp_crop": lrp,
            "lrp_crop_slim": lrp_step(8)[0],
            "random_crop": make_train_step(
                _classifier(3, device, PAPER_CLASSIFIER, classifier_width), RandomCrop(0.5).to(device), TaskObjective()
            ),
        },
        x,
        y,
        repeats=repeats,
        warmup=warmup,
    )
    return {
        "train_step_ratio_crop": seconds["lrp_crop"] / seconds["random_crop"],
        "train_step_ratio_crop_slim": seconds["lrp_crop_slim"] / seconds["random_crop"],
        **{f"seconds_{name}": value for name, value in seconds.items()},
        "crop_batch": batch,
        "crop_image_size": size,
        "crop_candidates": candidates,
        "crop_classifier": PAPER_CLASSIFIER,
    }


def crop_experiment_step(
    kind: str,
    size: int = 48,
    channels: int = 1,
    device: str = "cpu",
    width: int = 16,
    depth: int = 4,
    channels_last: bool = False,
) -> Callable:
    """A training step in the crop experiment's setting, its 4-stage CNN classifier of width 20: ``kind`` ``lrp``
    (φ of ``width`` and ``depth`` whose stage 2 proposes the candidates) or ``random`` (crops of side 0.85–1);
    with ``channels_last``, f's and φ's weights converted as ``TrainConfig(channels_last=True)`` does."""
    if kind == "lrp":
        aug: Augmenter = InstaAug(
            ("crop",),
            phi_size=size,
            in_channels=channels,
            levels=(2,),
            depth=depth,
            width=width,
            global_crop=False,
            box_scale=1.0,
            centre_jitter=0.0,
            size_jitter=0.0,
        )
        objective: nn.Module = InstaAugObjective(EntropyController(*aug.entropy_range))
    elif kind == "random":
        aug, objective = RandomCrop(0.85, in_channels=channels), TaskObjective()
    else:
        raise ValueError(f"kind must be 'lrp' or 'random', got {kind!r}")
    model, aug, objective = _classifier(channels, device, width=20, depth=4), aug.to(device), objective.to(device)
    if channels_last:
        to_channels_last(model, aug)
    return make_train_step(model, aug, objective)


def crop_step_ratio_small_classifier(
    batch: int = 64, size: int = 48, channels: int = 1, repeats: int = 20, device: str = "cpu"
) -> dict[str, Any]:
    """Seconds per training step with LRP crops and with random crops in the crop experiment's own setting: its
    4-stage CNN classifier (width 20), greyscale 48×48 cluttered digits, φ of width 16 with 4 stages (and a slim
    one, width 8 with 3 stages, the same candidate boxes) → ``train_step_ratio_crop_small_classifier`` and
    ``train_step_ratio_crop_slim_small_classifier``."""
    x, y = _batch(batch, channels, size, device)
    seconds = compare_steps(
        {
            "lrp_crop": crop_experiment_step("lrp", size, channels, device),
            "lrp_crop_slim": crop_experiment_step("lrp", size, channels, device, width=8, depth=3),
            "random_crop": crop_experiment_step("random", size, channels, device),
        },
        x,
        y,
        repeats=repeats,
    )
    return {
        f"train_step_ratio_crop{SMALL_SUFFIX}": seconds["lrp_crop"] / seconds["random_crop"],
        f"train_step_ratio_crop_slim{SMALL_SUFFIX}": seconds["lrp_crop_slim"] / seconds["random_crop"],
        **{f"seconds_{name}{SMALL_SUFFIX}": value for name, value in seconds.items()},
        f"crop_batch{SMALL_SUFFIX}": batch,
        f"crop_image_size{SMALL_SUFFIX}": size,
    }


def channels_last_ratio(
    batch: int = 64, size: int = 48, channels: int = 1, repeats: int = 20, device: str = "cpu"
) -> dict[str, Any]:
    """Seconds per training step with channels-last convolution weights ÷ the default layout, in the crop
    experiment's setting (``crop_experiment_step``, ``batch`` greyscale 48×48 images): with LRP crops →
    ``channels_last_step_ratio_lrp``, and with random crops → ``channels_last_step_ratio_random`` (< 1: faster)."""
    x, y = _batch(batch, channels, size, device)
    steps = {
        f"{kind}_{layout}": crop_experiment_step(kind, size, channels, device, channels_last=layout == "nhwc")
        for kind in ("lrp", "random")
        for layout in ("nchw", "nhwc")
    }
    seconds = compare_steps(steps, x, y, repeats=repeats)
    kinds = ("lrp", "random")
    return {
        **{f"channels_last_step_ratio_{k}": seconds[f"{k}_nhwc"] / seconds[f"{k}_nchw"] for k in kinds},
        **{f"seconds_channels_last_{name}": value for name, value in seconds.items()},
    }


def channels_last_uniform_ratio(
    batch: int = 64, size: int = 32, repeats: int = 20, device: str = "cpu"
) -> dict[str, Any]:
    """With the small CNN and rotation + colour (RGB ``size`` px, ``batch``), a training step with f's and φ's
    weights channels-last ÷ the default layout, for InstaAug (``channels_last_step_ratio_uniform_instaaug``) and
    random augmentation (``channels_last_step_ratio_uniform_random``) (< 1: faster), and InstaAug ÷ random
    augmentation with both channels-last (``train_step_ratio_uniform_channels_last_small_classifier``)."""
    x, y = _batch(batch, 3, size, device)
    steps = {
        f"{method}_{layout}": uniform_step(method, device, SMALL_CLASSIFIER, channels_last=layout == "nhwc")
        for method in ("instaaug", "random")
        for layout in ("nchw", "nhwc")
    }
    seconds = compare_steps(steps, x, y, repeats=repeats)
    return {
        **{
            f"channels_last_step_ratio_uniform_{m}": seconds[f"{m}_nhwc"] / seconds[f"{m}_nchw"]
            for m in ("instaaug", "random")
        },
        f"train_step_ratio_uniform_channels_last{SMALL_SUFFIX}": seconds["instaaug_nhwc"] / seconds["random_nhwc"],
        **{f"seconds_channels_last_uniform_{name}": value for name, value in seconds.items()},
    }


def kornia_pipeline(size: int) -> nn.Module:
    """The ``kornia.augmentation`` equivalent of ``our_pipeline``: random resized square crops, rotation ±90°,
    colour jitter (brightness, contrast, saturation 0.4; hue 0.15 turns), each applied to every image."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.25, 1.0), ratio=(1.0, 1.0), p=1.0),
        K.RandomRotation(90.0, p=1.0),
        K.ColorJitter(
            brightness=KORNIA_RANGES["value"],
            contrast=KORNIA_RANGES["contrast"],
            saturation=KORNIA_RANGES["saturation"],
            hue=KORNIA_RANGES["hue"],
            p=1.0,
        ),
    )


def our_pipeline() -> Callable[[torch.Tensor], torch.Tensor]:
    """Our per-sample random crop (side ∈ [0.5, 1] of the image, so area ∈ [0.25, 1]), rotation and colour jitter
    with the ranges of ``KORNIA_RANGES``, in one augmenter (one resampling, closed-form colour): images
    (B, C, H, W) → views (B, C, H, W)."""
    aug = RandomAugment(("crop", *UNIFORM_TRANSFORMS), {"crop": (0.5, 1.0), **KORNIA_RANGES})

    def apply(x: torch.Tensor) -> torch.Tensor:
        with trusted_inputs():
            return aug(x).images

    return apply


def _timed_pair(
    ours: Callable[[torch.Tensor], torch.Tensor],
    theirs: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    repeats: int,
    backward: bool,
) -> dict[str, float]:
    """Median seconds of ``ours(x)`` and ``theirs(x)``, forward only (no autograd) or forward + backward to x."""

    def call(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
        if not backward:
            return lambda: _no_grad(fn, x)
        leaf = x.detach().requires_grad_()
        return lambda: fn(leaf).sum().backward()

    return compare_calls({"ours": call(ours), "kornia": call(theirs)}, repeats=repeats)


def _no_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fn(x)


def augment_throughput(
    batch: int = 64,
    size: int = 32,
    repeats: int = 20,
    device: str = "cpu",
    backward: bool = False,
    key: str | None = None,
) -> dict[str, Any]:
    """Images per second of ``our_pipeline`` and of ``kornia_pipeline`` on the same batch (B, 3, size, size)
    → ``augment_throughput_vs_kornia_<key>`` = ours ÷ kornia's, ``key`` by default ``<B>x<size>`` (with
    ``_backward`` for forward + backward)."""
    x, _ = _batch(batch, 3, size, device)
    ours, theirs = our_pipeline(), kornia_pipeline(size).to(device)
    seconds = _timed_pair(ours, theirs, x, repeats, backward)
    key = (key or f"{batch}x{size}") + ("_backward" if backward else "")
    return {
        f"augment_throughput_vs_kornia_{key}": seconds["kornia"] / seconds["ours"],
        f"augment_images_per_second_ours_{key}": batch / seconds["ours"],
        f"augment_images_per_second_kornia_{key}": batch / seconds["kornia"],
    }


def colour_throughput(batch: int = 128, size: int = 64, repeats: int = 20, device: str = "cpu") -> dict[str, Any]:
    """The colour families alone (hue, saturation, value, contrast at ``KORNIA_RANGES``): ours ÷ kornia's
    ``ColorJitter`` (``colour_throughput_vs_kornia``) and ours ÷ the same per-sample parameters applied by an
    HSV round trip through ``kornia.color`` (``colour_closed_form_vs_round_trip``; both > 1: ours is faster)."""
    import kornia.augmentation as K
    from kornia.color import hsv_to_rgb, rgb_to_hsv

    x, _ = _batch(batch, 3, size, device)
    names = ("hue", "saturation", "value", "contrast")
    aug = RandomAugment(names, {k: KORNIA_RANGES[k] for k in names})
    jitter = K.ColorJitter(
        brightness=KORNIA_RANGES["value"],
        contrast=KORNIA_RANGES["contrast"],
        saturation=KORNIA_RANGES["saturation"],
        hue=KORNIA_RANGES["hue"],
        p=1.0,
    ).to(device)
    params = aug.distribution(x).sample()

    def round_trip() -> torch.Tensor:
        h, s, v = rgb_to_hsv(x).unbind(1)
        h = torch.remainder(h + 2 * torch.pi * params[:, 0, None, None], 2 * torch.pi)
        s = (s * (1 + params[:, 1, None, None])).clamp(0, 1)
        v = (v * (1 + params[:, 2, None, None])).clamp(0, 1)
        return adjust_contrast(hsv_to_rgb(torch.stack((h, s, v), 1)), params[:, 3])

    with torch.no_grad():
        seconds = compare_calls(
            {"ours": lambda: aug.stack(x, params), "kornia": lambda: jitter(x), "round_trip": round_trip},
            repeats=repeats,
        )
    return {
        "colour_throughput_vs_kornia": seconds["kornia"] / seconds["ours"],
        "colour_closed_form_vs_round_trip": seconds["round_trip"] / seconds["ours"],
        "colour_batch": batch,
        "colour_image_size": size,
    }


def tta_speedup(
    batch: int = 32,
    size: int = 32,
    n: int = 10,
    repeats: int = 20,
    device: str = "cpu",
    classifier: str = SMALL_CLASSIFIER,
    classifier_width: int | None = None,
) -> dict[str, Any]:
    """Test-time augmentation with n views: a loop of n (augment, forward) calls ÷ ``TTAWrapper`` with its default
    chunking (``tta_auto_speedup``) and with all B·n views in one forward (``tta_batched_speedup``), the same
    classifier and InstaAug (uniform rotation + colour); > 1: the wrapper is faster. Keys of the PreAct ResNet-18
    end in ``_resnet18``."""
    x, _ = _batch(batch, 3, size, device)
    model = _classifier(3, device, classifier, classifier_width).eval()
    aug = InstaAug(UNIFORM_TRANSFORMS).to(device).eval()
    wrappers = {
        "auto": TTAWrapper(model, aug, n_copies=n),
        "batched": TTAWrapper(model, aug, n_copies=n, chunk_size=None),
    }

    def call(wrapper: TTAWrapper) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with trusted_inputs(), torch.no_grad():
                return wrapper(x)

        return run

    def loop() -> torch.Tensor:
        with trusted_inputs(), torch.no_grad():
            return torch.stack([model(aug(x).images) for _ in range(n)], 1).mean(1)

    seconds = compare_calls({**{k: call(w) for k, w in wrappers.items()}, "loop": loop}, repeats=repeats)
    suffix = "" if classifier == SMALL_CLASSIFIER else "_resnet18"
    return {
        f"tta_auto_speedup{suffix}": seconds["loop"] / seconds["auto"],
        f"tta_batched_speedup{suffix}": seconds["loop"] / seconds["batched"],
        f"seconds_tta_loop{suffix}": seconds["loop"],
        "tta_views": n,
        "tta_batch": batch,
    }


def uniform_step(
    method: str,
    device: str = "cpu",
    classifier: str = PAPER_CLASSIFIER,
    classifier_width: int | None = None,
    channels_last: bool = False,
) -> Callable:
    """The training step of one method of ``uniform_steps``: ``instaaug`` (default φ, width 16, 3 stages),
    ``instaaug_slim`` (φ of width 8), ``instaaug_global`` (φ without a network: one learned range for every input,
    so the step pays only for the transforms' backward pass to the sampled parameters), ``instaaug_phi16`` (φ at
    16 px), ``instaaug_nchw_phi`` (φ's input left NCHW on the CPU), ``two_pass`` (the default φ in the paper's
    two-pass step, ``make_two_pass_step``) or ``random``, with a fresh ``classifier`` (``preact_resnet18`` or
    ``small_cnn``; ``classifier_width``: its width when not the default); with ``channels_last``, f's and φ's
    weights converted as ``TrainConfig(channels_last=True)`` does."""
    if method not in UNIFORM_METHODS:
        raise ValueError(f"method must be one of {UNIFORM_METHODS}, got {method!r}")
    if classifier not in (PAPER_CLASSIFIER, SMALL_CLASSIFIER):
        raise ValueError(f"classifier must be {PAPER_CLASSIFIER!r} or {SMALL_CLASSIFIER!r}, got {classifier!r}")
    if method == "random":
        aug: Augmenter = RandomAugment(UNIFORM_TRANSFORMS).to(device)
        objective: nn.Module = TaskObjective()
    else:
        options = {**UNIFORM_INSTAAUG, **UNIFORM_PHI_VARIANTS}.get(method, {})
        aug = InstaAug(UNIFORM_TRANSFORMS, **options).to(device)
        if method == "instaaug_nchw_phi":
            aug.net.channels_last_on_cpu = False
        objective = InstaAugObjective(EntropyController(*aug.entropy_range)).to(device)
    model = _classifier(3, device, classifier, classifier_width)
    if channels_last:
        to_channels_last(model, aug)
    return (make_two_pass_step if method == "two_pass" else make_train_step)(model, aug, objective)


def peak_bytes(run: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes allocated while ``run()`` runs, above what was allocated before it. CUDA:
    ``torch.cuda.max_memory_allocated``; CPU: the allocation and free events of ``torch.profiler``'s memory
    profiling (every tensor allocation, forward and backward), summed in time order."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type().name == "CPU"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()  # negative for frees
        peak = max(peak, current)
    return peak


def peak_memory(
    batch: int = 32,
    size: int = 32,
    steps: int = 2,
    device: str = "cpu",
    classifier: str = PAPER_CLASSIFIER,
    classifier_width: int | None = None,
) -> dict[str, Any]:
    """Peak memory of training with InstaAug (uniform rotation + colour) and with random augmentation, same
    classifier and batch → ``peak_memory_ratio`` (``peak_memory_ratio_small_classifier`` with the small CNN);
    also ``peak_memory_ratio_global`` for InstaAug without a φ network (the transforms' saved tensors alone) and
    ``peak_memory_ratio_phi16`` with φ at 16 px.
    Everything a step needs is counted: the measurement starts before the models, the optimiser and the batch are
    created and covers ``steps`` training steps (the first creates Adam's moments; from the second on, last
    step's gradients are held during the forward pass)."""
    results: dict[str, Any] = {}
    end = _suffix(classifier)
    for method in ("instaaug", "instaaug_global", "instaaug_phi16", "random"):

        def run(method: str = method) -> None:
            step = uniform_step(method, device, classifier, classifier_width)
            x, y = _batch(batch, 3, size, device)
            for _ in range(steps):
                step(x, y)

        run()  # once outside the measurement: lazy initialisations (kernels, caches) are not the method's cost
        results[f"peak_bytes_{method}{end}"] = peak_bytes(run, device)
    results[f"peak_memory_ratio{end}"] = results[f"peak_bytes_instaaug{end}"] / results[f"peak_bytes_random{end}"]
    for variant in ("global", "phi16"):
        ratio = results[f"peak_bytes_instaaug_{variant}{end}"] / results[f"peak_bytes_random{end}"]
        results[f"peak_memory_ratio_{variant}{end}"] = ratio
    results[f"peak_memory_batch{end}"] = batch
    results[f"peak_memory_image_size{end}"] = size
    return results


def scaling(
    batches: Sequence[int] = (8, 16, 32),
    sizes: Sequence[int] = (16, 32, 64),
    base_batch: int = 8,
    base_size: int = 32,
    repeats: int = 5,
    device: str = "cpu",
    classifier: str = PAPER_CLASSIFIER,
    classifier_width: int | None = None,
    configs: Sequence[tuple[int, int]] | None = None,
    two_pass: bool = False,
) -> list[dict[str, Any]]:
    """Step seconds of InstaAug (uniform) and random augmentation (and, with ``two_pass``, the paper's two-pass
    step, ``make_two_pass_step``) over batch sizes (at ``base_size``) and image sizes (at ``base_batch``), or over
    the (batch, image size) pairs of ``configs`` (e.g. ``SCALING_GRID``): rows ``{"batch", "image_size",
    "seconds_instaaug", "seconds_random", "ratio"}`` (plus ``"seconds_two_pass"`` and ``"ratio_two_pass"``,
    both ÷ random augmentation)."""
    rows = []
    if configs is None:
        configs = [(b, base_size) for b in batches] + [(base_batch, s) for s in sizes if s != base_size]
    methods = ("instaaug", "random", "two_pass") if two_pass else ("instaaug", "random")
    for batch, size in configs:
        x, y = _batch(batch, 3, size, device)
        steps = uniform_steps(device, methods, classifier=classifier, classifier_width=classifier_width)
        seconds = compare_steps(steps, x, y, repeats=repeats, warmup=1)
        row = {
            "batch": batch,
            "image_size": size,
            "seconds_instaaug": seconds["instaaug"],
            "seconds_random": seconds["random"],
            "ratio": seconds["instaaug"] / seconds["random"],
        }
        if two_pass:
            row.update(seconds_two_pass=seconds["two_pass"], ratio_two_pass=seconds["two_pass"] / seconds["random"])
        rows.append(row)
    return rows


def uniform_breakdown(batch: int = 64, size: int = 32, repeats: int = 20, device: str = "cpu") -> dict[str, Any]:
    """Where the extra time of a small-classifier InstaAug step goes (rotation + colour, small CNN, RGB images),
    each variant ÷ random augmentation, side by side: the default step
    (``train_step_ratio_uniform_default_small_classifier``), φ at 16 px (``..._phi16_...``), φ's input left NCHW
    on the CPU (``..._nchw_phi_...``), no φ network (``..._global_...``: the transforms' backward pass and f's
    input gradient alone) and the paper's two-pass step (``..._two_pass_...``)."""
    x, y = _batch(batch, 3, size, device)
    methods = ("instaaug", "instaaug_phi16", "instaaug_nchw_phi", "instaaug_global", "two_pass", "random")
    seconds = compare_steps(uniform_steps(device, methods, SMALL_CLASSIFIER), x, y, repeats=repeats, warmup=3)
    names = {"instaaug": "default", "instaaug_phi16": "phi16", "instaaug_nchw_phi": "nchw_phi"}
    names.update(instaaug_global="global", two_pass="two_pass")
    return {
        **{f"train_step_ratio_uniform_{k}{SMALL_SUFFIX}": seconds[m] / seconds["random"] for m, k in names.items()},
        **{f"seconds_breakdown_{m}{SMALL_SUFFIX}": seconds[m] for m in methods},
        f"breakdown_batch{SMALL_SUFFIX}": batch,
        f"breakdown_image_size{SMALL_SUFFIX}": size,
    }


def tta_vs_ttach(batch: int = 32, size: int = 32, repeats: int = 20, device: str = "cpu") -> dict[str, Any]:
    """``TTAWrapper`` ÷ ttach's ``ClassificationTTAWrapper`` with the same 8 views per input and the same small CNN,
    mean merge (time ratio, > 1: ours is faster): ttach's flips × 4 right-angle rotations (a loop of 8 forwards)
    against ours with random flips and rotations (``tta_vs_ttach_speedup``) and with InstaAug's learned rotation +
    colour, φ run once (``tta_instaaug_vs_ttach_speedup``). Empty when the optional ``ttach`` package is not
    installed (it is not a dependency)."""
    if importlib.util.find_spec("ttach") is None:
        return {}
    ttach = importlib.import_module("ttach")
    x, _ = _batch(batch, 3, size, device)
    model = _classifier(3, device).eval()
    views = ttach.Compose([ttach.HorizontalFlip(), ttach.Rotate90(angles=[0, 90, 180, 270])])
    wrappers = {
        "ttach": ttach.ClassificationTTAWrapper(model, views, merge_mode="mean"),
        "ours": TTAWrapper(model, RandomAugment(("rotation", "flip")).to(device).eval(), len(views), merge="mean"),
        "instaaug": TTAWrapper(model, InstaAug(UNIFORM_TRANSFORMS).to(device).eval(), len(views), merge="mean"),
    }

    def call(wrapper: nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with trusted_inputs(), torch.no_grad():
                return wrapper(x)

        return run

    seconds = compare_calls({name: call(w) for name, w in wrappers.items()}, repeats=repeats)
    return {
        "tta_vs_ttach_speedup": seconds["ttach"] / seconds["ours"],
        "tta_instaaug_vs_ttach_speedup": seconds["ttach"] / seconds["instaaug"],
        "seconds_tta_ttach": seconds["ttach"],
        "tta_ttach_views": len(views),
    }


def phi_size_ratio(
    sizes: Sequence[int] = (32, 64, 128), batch: int = 64, repeats: int = 8, device: str = "cpu"
) -> list[dict[str, Any]]:
    """With the small CNN as classifier, a training step with InstaAug (rotation + colour) ÷ one with random
    augmentation, per image size: φ at its default resolution (at most ``PHI_MAX_SIDE`` px) and at the image's own
    size. Rows ``{"image_size", "ratio_default", "ratio_native", "seconds_random"}``."""
    rows = []
    for size in sizes:
        x, y = _batch(batch, 3, size, device)
        steps = {
            "random": make_train_step(
                _classifier(3, device), RandomAugment(UNIFORM_TRANSFORMS).to(device), TaskObjective()
            )
        }
        for name, options in (("default", {}), ("native", {"phi_size": (size, size)})):
            aug = InstaAug(UNIFORM_TRANSFORMS, **options).to(device)
            steps[name] = make_train_step(_classifier(3, device), aug, aug.objective().to(device))
        seconds = compare_steps(steps, x, y, repeats=repeats, warmup=2)
        rows.append(
            {
                "image_size": size,
                "ratio_default": seconds["default"] / seconds["random"],
                "ratio_native": seconds["native"] / seconds["random"],
                "seconds_random": seconds["random"],
            }
        )
    return rows


def distribution_step_ratio(
    batch: int = 64, size: int = 32, repeats: int = 20, device: str = "cpu", entropy_samples: int = 8
) -> dict[str, float]:
    """With the small CNN as classifier and rotation + colour, a training step of InstaAug with a mixture of boxes
    and with a conditional flow (``entropy_samples`` samples for its entropy) ÷ one with uniform intervals,
    measured side by side."""
    x, y = _batch(batch, 3, size, device)
    steps = {}
    for name in ("uniform", "mixture", "flow"):
        aug = InstaAug(UNIFORM_TRANSFORMS, distribution=name, entropy_samples=entropy_samples).to(device)
        steps[name] = make_train_step(_classifier(3, device), aug, aug.objective().to(device))
    seconds = compare_steps(steps, x, y, repeats=repeats, warmup=2)
    return {
        "train_step_ratio_mixture_vs_uniform": seconds["mixture"] / seconds["uniform"],
        "train_step_ratio_flow_vs_uniform": seconds["flow"] / seconds["uniform"],
    }


def loader_vs_step(
    data: str | os.PathLike,
    image_size: int = 64,
    batch: int = 64,
    workers: Sequence[int] = (0, 1, 2),
    batches: int = 20,
    device: str = "cpu",
) -> dict[str, float]:
    """Images/s of the streamed loader of ``instaaug fit`` (files decoded and resized in ``workers`` worker
    processes) over an image folder, against images/s of the training step (small CNN, in-memory batches) without
    augmentation and with InstaAug crops: whether the loader can keep the step fed. Keys ``loader_w<N>``,
    ``step_none``, ``step_instaaug`` (``batches`` batches each, after warm-up)."""
    streamed = load_user_data(str(data), cache="stream", image_size=image_size, val_fraction=0.1)
    results: dict[str, float] = {}
    for n in workers:
        loader = streamed.train.training_batches(batch, workers=n)
        loader_throughput(loader, max_batches=3)  # workers started, files in the page cache
        results[f"loader_w{n}"] = loader_throughput(loader, max_batches=batches)
    x, y = next(iter(streamed.train.training_batches(batch * batches, workers=0)))
    x, y = x.to(device), y.to(device)
    classes = int(streamed.train.y.max()) + 1
    for name, aug in (("none", NoAugment()), ("instaaug", InstaAug(("crop",)))):
        objective = aug.objective() if isinstance(aug, InstaAug) else TaskObjective()
        torch.manual_seed(0)
        model = build_classifier(SMALL_CLASSIFIER, 3, classes).to(device)
        step = make_train_step(model, aug.to(device), objective.to(device))
        for xb, yb in zip(x[: 3 * batch].split(batch), y[: 3 * batch].split(batch), strict=True):
            step(xb, yb)
        started = time.perf_counter()
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            step(xb, yb)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        results[f"step_{name}"] = x.shape[0] / (time.perf_counter() - started)
    return results


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _load() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_benchmarks(out: str | Path = "bench.json", quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run the benchmarks and write their results to ``out`` (JSON), with the machine and its load average
    (1, 5, 15 minutes) at the start and the end; ``quick`` checks that they work, fast (tiny images and batches,
    one round: the figures then say nothing about speed)."""
    from tqdm.auto import tqdm

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    # Headline figures (PreAct ResNet-18, a second or more per step at 1 CPU thread): 10 rounds; the small
    # classifier's: 20. Quick: tiny images and batches, one round and a ResNet-18 of width 8, to check that
    # everything runs.
    rounds, small_rounds = (1, 1) if quick else (10, 20)
    small = SMALL_CLASSIFIER
    resnet: dict[str, Any] = {"device": device, "classifier_width": 8 if quick else None}
    sections: list[tuple[str, Callable[[], Any]]] = [
        (
            "uniform step",
            lambda: uniform_step_ratio(batch=2 if quick else 32, size=16 if quick else 32, repeats=rounds, **resnet),
        ),
        (
            "crop step",
            lambda: crop_step_ratio(batch=2 if quick else 16, size=32 if quick else 64, repeats=rounds, **resnet),
        ),
        (
            "uniform step, small classifier",
            lambda: uniform_step_ratio(
                batch=4 if quick else 64, repeats=small_rounds, device=device, classifier=small, warmup=3
            ),
        ),
        (
            "crop step, small classifier",
            lambda: crop_step_ratio_small_classifier(batch=4 if quick else 64, repeats=small_rounds, device=device),
        ),
        ("channels-last", lambda: channels_last_ratio(batch=4 if quick else 64, repeats=small_rounds, device=device)),
        (
            "channels-last, uniform",
            lambda: channels_last_uniform_ratio(
                batch=4 if quick else 64, size=16 if quick else 32, repeats=small_rounds, device=device
            ),
        ),
        *(
            (
                f"vs kornia {b}x{px}{' backward' if back else ''}",
                lambda b=b, px=px, back=back: augment_throughput(
                    4 if quick else b, px, small_rounds, device, backward=back, key=f"{b}x{px}"
                ),
            )
            for b, px in ((64, 32), (128, 64))
            for back in (False, True)
        ),
        (
            "mixture and flow steps",
            lambda: distribution_step_ratio(
                batch=4 if quick else 64, size=16 if quick else 32, repeats=small_rounds, device=device
            ),
        ),
        ("colour", lambda: colour_throughput(batch=4 if quick else 128, size=64, repeats=small_rounds, device=device)),
        ("tta", lambda: tta_speedup(batch=2 if quick else 32, n=10, repeats=small_rounds, device=device)),
        (
            "tta, ResNet-18",
            lambda: tta_speedup(
                batch=2 if quick else 32,
                n=10,
                repeats=rounds,
                device=device,
                classifier=PAPER_CLASSIFIER,
                classifier_width=resnet["classifier_width"],
            ),
        ),
        (
            "tta vs ttach",
            lambda: tta_vs_ttach(
                batch=2 if quick else 32, size=16 if quick else 32, repeats=small_rounds, device=device
            ),
        ),
        (
            "uniform step breakdown, small classifier",
            lambda: uniform_breakdown(
                batch=4 if quick else 64, size=16 if quick else 32, repeats=small_rounds, device=device
            ),
        ),
        ("memory", lambda: peak_memory(batch=2 if quick else 32, size=16 if quick else 32, **resnet)),
        ("memory, small classifier", lambda: peak_memory(batch=4 if quick else 64, device=device, classifier=small)),
        (
            "scaling",
            lambda: {
                # ResNet-18 at batch 256 / 128 px takes minutes a step on one CPU thread: the full grid on CUDA.
                "scaling": scaling(configs=[(2, 16)], repeats=1, two_pass=True, **resnet)
                if quick
                else scaling(configs=SCALING_GRID if device.startswith("cuda") else None, two_pass=True, **resnet),
                "scaling_small_classifier": scaling(
                    configs=[(2, 16), (2, 32)] if quick else SCALING_GRID,
                    repeats=1 if quick else 5,
                    device=device,
                    classifier=small,
                    two_pass=True,
                ),
            },
        ),
    ]
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "device": device, "load_average_start": _load()}
    started = time.perf_counter()
    bar = tqdm(sections, desc="bench", disable=not sys.stderr.isatty())
    for name, section in bar:
        bar.set_postfix_str(name)
        results.update(section())
    results["seconds_total"] = time.perf_counter() - started
    results["load_average_end"] = _load()
    write_json(out, results)
    return results
