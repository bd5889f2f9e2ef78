"""``UniformMixture``: per input, a mixture of K boxes over the interval families' parameters.

One interval per parameter cannot express a union of arcs (a 3-fold symmetric shape tolerates rotations near 0 and
±2π/3 but not in between); K weighted boxes can. A sample picks component k with probability π_k (a categorical
draw: its gradient comes from the score function, REINFORCE, with the objective's baseline) and then a point
uniformly inside box k (reparameterised: pathwise gradients to the box's ends).

The entropy is exact whatever the overlap: the density is constant on every cell of the grid that the 2K sorted
ends of each dimension make, so H = −Σ_cells vol(cell) · p(cell) · log p(cell) with p(cell) = Σ_k π_k 1[cell ⊂ box
k] / vol(box k). It is differentiable in the ends and in π (the grid's combinatorics are piecewise constant), and
for disjoint boxes it equals H(π) + Σ_k π_k log vol(box k). The grid has (2K − 1)^D cells: fine for the few
dimensions of a transformation (K = 3, D = 3: 125 cells).

``symmetric_centres`` and ``centre_offsets`` start the components at the symmetry candidates of a periodic parameter
(the identity turned by multiples of 2π/M) instead of spread evenly over the range: components that start inside
a label-preserving arc only have to widen, and the ones in the gaps only have to lose their weight.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from .base import Draw, TransformDistribution
from .uniform import DEFAULT_MIN_WIDTH


class UniformMixture(TransformDistribution):
    """A mixture of K uniform boxes per input.

    Args:
        low, high: (B, K, D) the boxes' ends, ``high >= low``.
        logits: (B, K) unnormalised log-weights of the components.
        names: one name per dimension D.
        min_width: widths are floored at this in densities and entropies (as for ``UniformRanges``).

    ``has_rsample`` is False: the component choice is discrete. ``draw`` still gives the samples pathwise gradients
    to the boxes' ends, and puts log π_k of the chosen component in ``score_log_prob`` (REINFORCE for the weights).
    """

    has_rsample = False

    def __init__(
        self,
        low: torch.Tensor,
        high: torch.Tensor,
        logits: torch.Tensor,
        names: Sequence[str],
        min_width: float = DEFAULT_MIN_WIDTH,
    ) -> None:
        if low.shape != high.shape or low.dim() != 3:
            raise ValueError(f"low and high must both be (B, K, D), got {tuple(low.shape)} and {tuple(high.shape)}")
        if logits.shape != low.shape[:2]:
            raise ValueError(f"logits must be (B, K) = {tuple(low.shape[:2])}, got {tuple(logits.shape)}")
        if len(names) != low.shape[2]:
            raise ValueError(f"{len(names)} names given for {low.shape[2]} dimensions")
        if min_width <= 0:
            raise ValueError(f"min_width must be > 0, got {min_width}")
        self.low, self.high, self.names, self.min_width = low, high, tuple(names), min_width
        self.log_weights = torch.log_softmax(logits, dim=-1)

    @property
    def batch_shape(self) -> torch.Size:
        return self.low.shape[:1]

    @property
    def components(self) -> int:
        return self.low.shape[1]

    @property
    def weights(self) -> torch.Tensor:
        """(B, K) the mixture weights π."""
        return self.log_weights.exp()

    def _log_volumes(self) -> torch.Tensor:
        """(B, K) log vol(box k), widths floored at ``min_width``."""
        return torch.log((self.high - self.low).clamp_min(self.min_width)).sum(-1)

    def _pick(self, sample_shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
        """Component indices (*S, B) drawn from π by inverting the CDF (one uniform per draw; honours
        ``generator``; no host sync)."""
        shape = (*sample_shape, *self.batch_shape)
        u = torch.rand((*shape, 1), generator=generator, device=self.low.device, dtype=self.low.dtype)
        cdf = self.weights.detach().cumsum(-1)
        return (u > cdf).sum(-1).clamp_max(self.components - 1)

    def _point(self, k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A uniform point (*S, B, D) inside box ``k`` (*S, B), with pathwise gradients to its ends."""
        index = k[..., None, None].expand(*k.shape, 1, self.low.shape[-1])
        low = self.low.expand(*k.shape, *self.low.shape[1:]).gather(-2, index).squeeze(-2)
        high = self.high.expand(*k.shape, *self.high.shape[1:]).gather(-2, index).squeeze(-2)
        u = torch.rand(low.shape, generator=generator, device=low.device, dtype=low.dtype)
        return low + u * (high - low)

    def rsample(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples (*S, B, D) with pathwise gradients to the boxes' ends (none to the weights: see ``draw``)."""
        return self._point(self._pick(sample_shape, generator), generator)

    def draw(self, sample_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> Draw:
        """Samples (pathwise within their box), the mixture's log-density of them (held fixed) and, as the
        score-function part, log π_k of each sample's component: (value (*S, B, D), log_prob, score (*S, B))."""
        k = self._pick(sample_shape, generator)
        value = self._point(k, generator)
        log_prob = self.log_prob(value.detach())
        score = self.log_weights.expand(*k.shape, self.components).gather(-1, k[..., None]).squeeze(-1)
        return Draw(value, log_prob, score)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density (*S, B) of ``value`` (*S, B, D): log Σ_k π_k 1[value ∈ box k] / vol(box k)."""
        inside = ((value[..., None, :] >= self.low) & (value[..., None, :] <= self.high)).all(-1)  # (*S, B, K)
        terms = self.log_weights - self._log_volumes()
        terms = torch.where(inside, terms.expand(inside.shape), torch.full_like(terms, -torch.inf).expand(inside.shape))
        return torch.logsumexp(terms, dim=-1)

    def entropy(self) -> torch.Tensor:
        """Exact differential entropy (B,) by the cell decomposition of the module docstring."""
        dims = self.low.shape[2]
        ends = torch.cat([self.low, self.high], dim=1).sort(dim=1).values  # (B, 2K, D)
        seg_low, seg_high = ends[:, :-1], ends[:, 1:]  # (B, M, D), M = 2K - 1 segments per dimension
        middle = (seg_low + seg_high) / 2
        length = seg_high - seg_low
        # inside[b, k, m, d]: segment m of dimension d lies within box k's extent in d.
        inside = (middle[:, None] >= self.low[:, :, None]) & (middle[:, None] <= self.high[:, :, None])
        segments = seg_low.shape[1]
        cells = torch.tensor(list(itertools.product(range(segments), repeat=dims)), device=self.low.device)  # (C, D)
        dim_index = torch.arange(dims, device=self.low.device)
        in_box = inside[:, :, cells, dim_index].all(-1)  # (B, K, C)
        volume = length[:, cells, dim_index].prod(-1)  # (B, C)
        density = (in_box * (self.log_weights - self._log_volumes()).exp()[..., None]).sum(1)  # (B, C)
        # p log p with 0 log 0 = 0; cells of zero density or zero volume add nothing.
        plogp = torch.where(density > 0, density * density.clamp_min(1e-30).log(), torch.zeros_like(density))
        return -(volume * plogp).sum(-1)

    def mode(self) -> torch.Tensor:
        """(B, D) the centre of the component of highest density π_k / vol(box k): a most probable point."""
        best = (self.log_weights - self._log_volumes()).argmax(-1)
        index = best[:, None, None].expand(-1, 1, self.low.shape[-1])
        return ((self.low + self.high) / 2).gather(1, index).squeeze(1)

    def __getitem__(self, index: torch.Tensor | slice | int) -> UniformMixture:
        low, high, logits = self.low[index], self.high[index], self.log_weights[index]
        if low.dim() == 2:
            low, high, logits = low[None], high[None], logits[None]
        return UniformMixture(low, high, logits, self.names, self.min_width)


def symmetric_centres(low: float, high: float, divisions: int, half_width: float) -> torch.Tensor:
    """Initial centres (K,) for a periodic parameter on [low, high] (low < 0 < high, one full turn): the identity 0
    turned by every multiple of (high − low) / ``divisions``, i.e. the rotations that a shape with n-fold symmetry
    is invariant to, for every n dividing ``divisions`` (6: n = 1, 2, 3, 6).

    A candidate on the seam (±π when ``divisions`` is even, both ends being the same rotation) cannot be a box's
    centre (a box never leaves the bounds), so it becomes two components, at low + ``half_width`` and
    high − ``half_width``, each a box of width 2·``half_width`` touching its end: K = divisions + 1 then, else
    K = divisions. Sorted ascending.
    """
    if divisions < 1:
        raise ValueError(f"divisions must be ≥ 1, got {divisions}")
    if not low < 0 < high:
        raise ValueError(f"need low < 0 < high, got ({low}, {high})")
    span = high - low
    if not 0 < half_width < span / (2 * divisions):
        raise ValueError(f"half_width must lie in (0, (high − low) / (2·divisions)), got {half_width}")
    centres = []
    for j in range(divisions):
        # The candidate j·span/M, wrapped into [low, high) (going round once from the identity).
        c = low + math.fmod(j * span / divisions - low, span)
        if math.isclose(c, low, abs_tol=1e-9 * span) or math.isclose(c, high, abs_tol=1e-9 * span):
            centres += [low + half_width, high - half_width]  # on the seam
        else:
            centres.append(c)
    return torch.tensor(sorted(centres), dtype=torch.float64)


def centre_offsets(centres: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The per-component offsets c0 (K,) that put a ``MixtureRangeHead``'s centres, c = low + (high − low) ·
    σ(r + c0), at ``centres`` (K,) for a zero raw output r: c0 = logit((centres − low) / (high − low))."""
    fractions = (centres.double() - low) / (high - low)
    if bool(((fractions <= 0) | (fractions >= 1)).any()):
        raise ValueError(f"centres must lie strictly inside ({low}, {high}), got {centres.tolist()}")
    return torch.logit(fractions)
