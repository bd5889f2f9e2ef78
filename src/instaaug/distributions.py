"""Distributions over transformation parameters, in the vocabulary of ``torch.distributions``.

``UniformRanges`` is the uniform parameterisation of InstaAug: for every sample b and parameter dimension d an
interval [low[b, d], high[b, d]], sampled independently per dimension with the reparameterisation trick.
``CropCategorical`` is the location-related parameterisation of crops: a categorical distribution over
candidate boxes. ``UniformCrops`` is the random-crop baseline's distribution.

Every distribution offers ``sample_with_log_prob(sample_shape, generator)``, ``entropy()`` and ``has_rsample``
(whether the samples carry gradients to the distribution's parameters; otherwise the score function does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: Narrowest interval width the learned heads produce. It keeps the entropy Σ log(width) finite, and it is a
#: floor in ``entropy()`` too, so intervals built by hand narrower than this are treated as this wide.
DEFAULT_MIN_WIDTH = 1e-3


class UniformRanges:
    """Independent uniform distributions U(low, high) per sample and parameter dimension.

    Args:
        low: (B, D) lower ends.
        high: (B, D) upper ends, ``high >= low``.
        names: one name per dimension D (e.g. ``("rotation",)``).
        min_width: the width floor used by ``entropy`` (see ``DEFAULT_MIN_WIDTH``).

    ``batch_shape`` is (B,) and ``event_shape`` is (D,): ``log_prob`` and ``entropy`` sum over D.
    """

    has_rsample = True

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        names: Sequence[str],
        min_width: float = DEFAULT_MIN_WIDTH,
    ) -> None:
        if low.shape != high.shape or low.dim() != 2:
            raise ValueError(f"low and high must both be (B, D), got {tuple(low.shape)} and {tuple(high.shape)}")
        if len(names) != low.shape[1]:
            raise ValueError(f"{len(names)} names given for {low.shape[1]} dimensions")
        if min_width <= 0:
            raise ValueError(f"min_width must be > 0, got {min_width}")
        self.low = low
        self.high = high
        self.names = tuple(names)
        self.min_width = min_width

    @property
    def batch_shape(self) -> torch.Size:
        return self.low.shape[:1]

    @property
    def event_shape(self) -> torch.Size:
        return self.low.shape[1:]

    @property
    def width(self) -> torch.Tensor:
        """(B, D) interval widths ``high - low``."""
        return self.high - self.low

    @property
    def mean(self) -> torch.Tensor:
        """(B, D) interval centres."""
        return (self.low + self.high) / 2

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised samples (*sample_shape, B, D): ``low + u * (high - low)`` with u ~ U(0, 1)."""
        shape = (*sample_shape, *self.low.shape)
        u = torch.rand(shape, generator=generator, device=self.low.device, dtype=self.low.dtype)
        return self.low + u * (self.high - self.low)

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples (*sample_shape, B, D) without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density of ``value`` (*S, B, D) → (*S, B); ``-inf`` outside the box."""
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        log_density = -torch.log(self.width.clamp_min(self.min_width)).sum(-1)
        return torch.where(inside, log_density.expand(inside.shape), torch.full_like(log_density, -torch.inf))

    def entropy(self) -> torch.Tensor:
        """Exact differential entropy (B,) = Σ_d log(high - low), with widths floored at ``min_width``."""
        return torch.log(self.width.clamp_min(self.min_width)).sum(-1)

    def sample_with_log_prob(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised samples (*S, B, D) and their log-density (*S, B) with the samples held fixed."""
        samples = self.rsample(sample_shape, generator)
        return samples, self.log_prob(samples.detach())

    def __getitem__(self, index: torch.Tensor | slice | int) -> UniformRanges:
        """The distributions of a subset of the batch (an index into B)."""
        low, high = self.low[index], self.high[index]
        if low.dim() == 1:
            low, high = low[None], high[None]
        return UniformRanges(low, high, self.names, self.min_width)

    def __repr__(self) -> str:
        return f"UniformRanges(batch={tuple(self.batch_shape)}, names={self.names})"


#: Parameter names of a crop box, all fractions of the image: centre (x right, y down), width and height.
CROP_PARAMS = ("crop_x", "crop_y", "crop_w", "crop_h")


class CropCategorical:
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
    def event_shape(self) -> torch.Size:
        return torch.Size((4,))

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

    def sample_with_log_prob(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (*sample_shape, B, 4) and their log-probabilities (*sample_shape, B), differentiable in logits."""
        index = self.sample_index(sample_shape, generator)
        log_prob = self.logits.expand(*index.shape, -1).gather(-1, index[..., None])[..., 0]
        return self.boxes_of(index, generator), log_prob - self.log_volume()[index]

    def sample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes (*sample_shape, B, 4) without gradient."""
        with torch.no_grad():
            return self.boxes_of(self.sample_index(sample_shape, generator), generator)

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError("crop candidates are discrete: use sample() and the score function (log_prob)")

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


class UniformCrops:
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

    sample = rsample

    def _log_density(self) -> float:
        return -math.log(max(self.max_scale - self.min_scale, DEFAULT_MIN_WIDTH))

    def sample_with_log_prob(
        self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = self.rsample(sample_shape, generator)
        return boxes, boxes.new_full(boxes.shape[:-1], self._log_density())

    def entropy(self) -> torch.Tensor:
        """(B,) log(max_scale - min_scale), floored like ``UniformRanges``."""
        return self._ref.new_full((self.batch,), -self._log_density())
