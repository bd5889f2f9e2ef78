"""Distributions over transformation parameters, all satisfying one contract (``TransformDistribution``).

- ``UniformRanges``: per-input intervals, reparameterised (InstaAug's uniform parameterisation);
- ``CropCategorical``: a categorical over candidate boxes with jitter (the location-related parameterisation);
- ``UniformCrops``: random crops (the baseline);
- ``FlipBernoulli``: a horizontal flip with a per-input probability;
- ``Product``: independent parts side by side (crop × ranges × flip), log_prob and entropy summed;
- ``UniformMixture``: per-input mixtures of K boxes (unions of arcs), exact entropy;
- ``FlowRanges`` (with its ``FlowHead``): per-input conditional normalizing flows, Monte Carlo entropy.
"""

from .base import Draw, TransformDistribution
from .crop import CROP_PARAMS, CropCategorical, UniformCrops
from .flip import FlipBernoulli
from .flow import FlowHead, FlowRanges
from .mixture import UniformMixture
from .product import Product
from .uniform import DEFAULT_MIN_WIDTH, UniformRanges

__all__ = [
    "CROP_PARAMS",
    "DEFAULT_MIN_WIDTH",
    "CropCategorical",
    "Draw",
    "FlipBernoulli",
    "FlowHead",
    "FlowRanges",
    "Product",
    "TransformDistribution",
    "UniformCrops",
    "UniformMixture",
    "UniformRanges",
]
