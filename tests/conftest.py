"""Shared fixtures and helpers: a fixed seed for every test, structured images, tiny augmenters, tiny conditioned
backbones (amortised), power spectrograms (audio)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from instaaug import InstaAug
from instaaug.amortised import ConditionedResNet, ConditionedViT
from instaaug.augment import legacy_crop  # noqa: F401 (re-exported for the tests)

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
