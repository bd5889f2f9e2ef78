"""Distributions over crop boxes: ``CropCategorical`` (InstaAug's location-related parameterisation, LRP) and
``UniformCrops`` (the random-crop baseline)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Draw, TransformDistribution
from .uniform import DEFAULT_MIN_WIDTH

#: Parameter names of a crop box, all fractions of the image: centre (x right, y down), width and height.
CROP_PARAMS = ("crop_x", "crop_y", "crop_w", "crop_h")


class CropCategorical(TransformDistribution):
    """A categorical distribution over N candidate crop boxes per input, with optional jitter inside each.

    The location-related parameterisation of InstaAug: every candidate k is a box (cx, cy, w, h) in fractions
    of the image (see ``CROP_PARAMS``), and ``logits[b, k]`` is its unnormalised log-probability for input b.

    Args:
        logits: (B, N) unnormalised log-probabilities.
        boxes: (N, 4) candidate boxes (cx, cy, w, h).
        jitter: optional (N, 3) half-ranges (jx, jy, js) of a uniform jitter: a sample of candidate k has centre
            (cx + jx·u₁, cy + jy·u₂) and size (w·r, h·r) with r = 1 + js·u₃, u ~ U[-1, 1]³. A zero half-range
            leaves that coordinate fixed.

    Densities and entropies of the jitter are taken in the coordinates (centre x, centre y, size factor r) of
    the jittered dimensions (a discrete atom in the others). ``entropy`` is exact, H = H[k] + E_k[log vol_k],
    when the supports of different candidates do not overlap, which ``instaaug.networks.crop_candidates``
    guarantees (jitter inside each unit's cell; disjoint size bands across levels).
    """

    has_rsample = False
    names = CROP_PARAMS

    def __init__(self, logits: torch.Tensor, boxes: torch.Tensor, jitter: torch.Tensor | None = None) -> None:
        if logits.dim() != 2:
            raise ValueError(f"logits must be (B, N), got shape {tuple(logits.shape)}")
        if boxes.shape != (logits.shape[1], 4):
            raise ValueError(f"boxes must be (N, 4) = ({logits.shape[1]}, 4), got {tuple(boxes.shape)}")
        if jitter is not None and jitter.shape != (logits.shape[1], 3):
            raise ValueError(f"jitter must be (N, 3) = ({logits.shape[1]}, 3), got {tuple(jitter.shape)}")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.boxes = boxes.to(logits.dtype)
        self.jitter = None if jitter is None else jitter.to(logits.dtype)

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:1]

    @property
    def num_candidates(self) -> int:
        return self.logits.shape[1]

    @property
    def probs(self) -> torch.Tensor:
        """(B, N) candidate probabilities."""
        return self.logits.exp()

    def log_volume(self) -> torch.Tensor:
        """(N,) log-volume of every candidate's jitter box (0 without jitter)."""
        if self.jitter is None:
            return self.boxes.new_zeros(self.boxes.shape[0])
        half = self.jitter
        return torch.where(half > 0, torch.log(2 * half.clamp_min(1e-30)), 0.0).sum(-1)

    def sample_index(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact categorical draws (*sample_shape, B) of candidate indices, by the Gumbel-max trick."""
        shape = (*sample_shape, *self.logits.shape)
        u = torch.rand(shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        tiny = torch.finfo(u.dtype).tiny
        gumbel = -torch.log(-torch.log(u.clamp(tiny, 1 - torch.finfo(u.dtype).eps)))
        return (self.logits.detach() + gumbel).argmax(-1)

    def boxes_of(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The boxes (*index.shape, 4) of candidate indices, with a fresh jitter draw when jitter is on."""
        boxes = self.boxes[index]
        if self.jitter is None:
            return boxes
        half = self.jitter[index]
        u = 2 * torch.rand(half.shape, generator=generator, device=half.device, dtype=half.dtype) - 1
        centre = boxes[..., :2] + half[..., :2] * u[..., :2]
        size = boxes[..., 2:] * (1 + half[..., 2:] * u[..., 2:])
        return torch.cat((centre, size), dim=-1)

    def draw(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> Draw:
        """Boxes (*sample_shape, B, 4) and their log-probabilities (*sample_shape, B), differentiable in the logits
        (all of it a score-function term: candidates are discrete)."""
        index = self.sample_index(sample_shape, generator)
        log_prob = self.logits.expand(*index.shape, -1).gather(-1, index[..., None])[..., 0]
        log_prob = log_prob - self.log_volume()[index]
        return Draw(self.boxes_of(index, generator), log_prob, log_prob)

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes (*sample_shape, B, 4) without gradient."""
        with torch.no_grad():
            return self.boxes_of(self.sample_index(sample_shape, generator), generator)

    def log_prob(self, value: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Log-probability (density in the jittered coordinates) of boxes ``value`` (*S, B, 4) → (*S, B).

        A box matching several candidates (identical atoms) gets the sum of their probabilities; one matching
        none gets ``-inf``.
        """
        value = value.to(self.logits.dtype)[..., None, :]  # (*S, B, 1, 4)
        boxes = self.boxes
        if self.jitter is None:
            inside = ((value - boxes).abs() <= atol).all(-1)
        else:
            half = self.jitter
            centre_ok = ((value[..., :2] - boxes[:, :2]).abs() <= half[:, :2] + atol).all(-1)
            factor = value[..., 2:] / boxes[:, 2:]
            size_ok = ((factor - 1).abs() <= half[:, 2:] + atol).all(-1)
            same_shape = (factor[..., 0] - factor[..., 1]).abs() <= atol
            inside = centre_ok & size_ok & same_shape
        scores = torch.where(inside, self.logits - self.log_volume(), -torch.inf)
        return scores.logsumexp(-1)

    def entropy(self) -> torch.Tensor:
        """Exact entropy (B,): categorical entropy plus the expected log-volume of the jitter."""
        p = self.probs
        # Masked candidates (logit -inf) contribute 0, not 0·(-inf); clamping keeps the gradient finite too.
        finite_logits = self.logits.clamp_min(torch.finfo(self.logits.dtype).min)
        return -(p * finite_logits).sum(-1) + (p * self.log_volume()).sum(-1)

    def topk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most probable candidates per input: boxes (B, k, 4) (jitter centres) and log-probs (B, k)."""
        if not 1 <= k <= self.num_candidates:
            raise ValueError(f"k must be in [1, {self.num_candidates}], got {k}")
        log_prob, index = self.logits.topk(k, dim=-1)
        return self.boxes[index], log_prob

    def __getitem__(self, index: torch.Tensor | slice | int) -> CropCategorical:
        logits = self.logits[index]
        return CropCategorical(logits[None] if logits.dim() == 1 else logits, self.boxes, self.jitter)

    def __repr__(self) -> str:
        return f"CropCategorical(batch={tuple(self.batch_shape)}, candidates={self.num_candidates})"


class UniformCrops(TransformDistribution):
    """Random crops: side s ~ U[min_scale, max_scale] (a fraction of width and height), position uniform inside.

    The distribution of the random-crop baseline, batch B. Boxes are (cx, cy, s, s) with cx = s/2 + u₁(1 - s),
    cy = s/2 + u₂(1 - s), u ~ U[0, 1]²; its density and entropy are taken in the coordinates (s, u₁, u₂).
    """

    has_rsample = True
    names = CROP_PARAMS

    def __init__(self, min_scale: float, max_scale: float, batch: int, reference: torch.Tensor) -> None:
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale ≤ max_scale ≤ 1, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.batch = float(min_scale), float(max_scale), batch
        self._ref = reference

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size((self.batch,))

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes (*sample_shape, B, 4)."""
        shape = (*sample_shape, self.batch, 3)
        u = torch.rand(shape, generator=generator, device=self._ref.device, dtype=self._ref.dtype)
        side = self.min_scale + (self.max_scale - self.min_scale) * u[..., :1]
        centre = side / 2 + u[..., 1:] * (1 - side)
        return torch.cat((centre, side, side), dim=-1)

    def _log_density(self) -> float:
        return -math.log(max(self.max_scale - self.min_scale, DEFAULT_MIN_WIDTH))

    def log_prob(self, value: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Log-density (*S, B) of boxes ``value`` (*S, B, 4) in the coordinates (s, u₁, u₂); ``-inf`` for boxes
        this distribution cannot draw (not square in fractions, side out of range, or not inside the image)."""
        centre, w, h = value[..., :2], value[..., 2], value[..., 3]
        side_ok = ((w - h).abs() <= atol) & (w >= self.min_scale - atol) & (w <= self.max_scale + atol)
        low = w[..., None] / 2
        inside = ((centre >= low - atol) & (centre <= 1 - low + atol)).all(-1)
        density = torch.full_like(w, self._log_density())
        return torch.where(side_ok & inside, density, torch.full_like(w, -torch.inf))

    def entropy(self) -> torch.Tensor:
        """(B,) log(max_scale - min_scale), floored like ``UniformRanges``."""
        return self._ref.new_full((self.batch,), -self._log_density())

    def __getitem__(self, index: torch.Tensor | slice | int) -> UniformCrops:
        if isinstance(index, int):
            batch = 1
        elif isinstance(index, slice):
            batch = len(range(*index.indices(self.batch)))
        else:
            batch = int(index.sum()) if index.dtype == torch.bool else index.numel()
        return UniformCrops(self.min_scale, self.max_scale, batch, self._ref)
