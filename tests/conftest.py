"""Shared fixtures and helpers: a fixed seed for every test, structured images, tiny augmenters, tiny conditioned
backbones (amortised), power spectrograms (audio), output locks (outputs), a photo folder and a user's model factory
(fit, userdata, usermodel), one instance of every transform distribution (composite, product)."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from instaaug import (
    CropCategorical,
    FlipBernoulli,
    InstaAug,
    Product,
    TransformDistribution,
    UniformCrops,
    UniformRanges,
)
from instaaug.amortised import ConditionedResNet, ConditionedViT
from instaaug.augment import legacy_crop  # noqa: F401 (re-exported for the tests)
from instaaug.data.photos import write_photo_folder
from instaaug.outputs import LOCK_FILE

# Property tests draw the same examples on every run, so CI cannot fail by chance; run with
# --hypothesis-profile=explore (or change the seed) to search further.
settings.register_profile("instaaug", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile("instaaug")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def structured_images(batch: int = 4, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Images with spatial structure (smooth gradients + blobs + noise) and saturated colours, in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    phases = torch.rand(batch, channels, 1, 1, generator=g) * 6.28
    freq = 1 + torch.rand(batch, channels, 1, 1, generator=g) * 3
    smooth = 0.5 + 0.3 * torch.sin(freq * (xx + 2 * yy) * 3.14 + phases)
    noise = 0.1 * (torch.rand(batch, channels, size, size, generator=g) - 0.5)
    return (smooth + noise).clamp(0.05, 0.95)


def tiny_aug(transforms=("rotation",), **options) -> InstaAug:
    """An InstaAug with a very small φ (width 4, depth 2)."""
    options.setdefault("width", 4)
    options.setdefault("depth", 2)
    return InstaAug(transforms, **options)


def perturb_output(aug: InstaAug, std: float = 0.5, seed: int = 1) -> InstaAug:
    """φ's output layer starts at zero (every input gets the same interval); give it random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = aug.net.output
        params = [out] if isinstance(out, torch.nn.Parameter) else list(out.parameters())
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return aug


def tiny_resnet(**options) -> ConditionedResNet:
    """A conditioned ResNet of two one-block stages (widths 4, 8), 3 basis kernels, conditioning MLP width 4."""
    return ConditionedResNet(**{"widths": (4, 8), "blocks": (1, 1), "num_kernels": 3, "hidden": 4, **options})


def tiny_vit(**options) -> ConditionedViT:
    """A conditioned ViT on (3, 8, 8) inputs: 4-px patches, dim 16, one layer of 2 heads."""
    return ConditionedViT(**{"image_size": (8, 8), "patch_size": 4, "dim": 16, "depth": 1, "heads": 2, **options})


def harmonic_spectra(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Power spectrograms (n, 1, 65, 24) of identical structure: a harmonic tone in frames 6–15 over a floor."""
    g = torch.Generator().manual_seed(seed)
    x = 1e-3 * (1 + torch.rand(1, 1, 65, 24, generator=g))
    x[0, 0, 8::8, 6:16] += 1.0
    return x.expand(n, -1, -1, -1).clone()


def write_lock(directory: Path, pid: int, hostname: str | None = None) -> Path:
    """Write the lock file of a run by process ``pid`` on ``hostname`` (this host by default) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    info = {"pid": pid, "hostname": hostname or socket.gethostname(), "started": "2024-01-02T03:04:05+00:00"}
    lock.write_text(json.dumps(info))
    return lock


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of real JPEG photographs: 24 classes × 6 images of 24 px."""
    return write_photo_folder(tmp_path_factory.mktemp("data") / "photos", per_class=6, size=24)


@pytest.fixture()
def factory_module(tmp_path, monkeypatch):
    """An importable module `user_models` with a model factory, as a user's package would have."""
    (tmp_path / "user_models.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def tiny(num_classes, channels=3):
                return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(4, num_classes))

            def not_a_model(num_classes):
                return "model"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    yield "user_models"
    sys.modules.pop("user_models", None)


def example_distributions() -> dict[str, TransformDistribution]:
    """One small instance (batch 3) of every transform distribution, a product of three of them included."""
    g = torch.Generator().manual_seed(0)
    b = 3
    low = -torch.rand(b, 2, generator=g)
    high = torch.rand(b, 2, generator=g)
    boxes = torch.tensor([[0.3, 0.3, 0.4, 0.4], [0.7, 0.7, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    jitter = torch.tensor([[0.05, 0.05, 0.1], [0.05, 0.05, 0.1], [0.0, 0.0, 0.0]])
    logits = torch.randn(b, 3, generator=g)
    uniform = UniformRanges(low, high, ("rotation", "hue"))
    return {
        "uniform": uniform,
        "crop": CropCategorical(logits, boxes),
        "crop-jitter": CropCategorical(logits, boxes, jitter),
        "random-crop": UniformCrops(0.4, 0.9, b, low),
        "flip": FlipBernoulli(torch.randn(b, generator=g)),
        "product": Product([CropCategorical(logits, boxes, jitter), uniform, FlipBernoulli(torch.randn(b))]),
    }
