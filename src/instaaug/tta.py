"""Test-time augmentation: merge a model's predictions over n views sampled from an augmenter."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .augment import InstaAug
from .validation import check_positive_int

#: How per-view outputs are merged (see ``merge_predictions``).
#: ``sum``, ``gmean``, ``max``, ``min``, ``tsharpen`` (and ``mean``) are ttach's merge modes.
MERGE_MODES = ("logits", "mean", "sum", "probs", "log_probs", "gmean", "max", "min", "tsharpen")
#: ``sample``: views drawn from the augmenter; ``top``: its k most probable crops (an ``InstaAug`` with crops).
VIEW_MODES = ("sample", "top")


def merge_predictions(
    outputs: torch.Tensor,
    merge: str = "logits",
    weights: torch.Tensor | None = None,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Merge per-view outputs (B, n, K, ...) into (B, K, ...); K (dimension 2) holds the classes.

    Modes, each a mean over the views weighted by ``weights`` (or a max/min over the views with weight > 0):

    * ``logits`` (InstaAug's default) and ``mean``: the mean of the outputs (``mean`` for outputs that are not
      logits, e.g. heat maps);
    * ``sum``: the (weighted) sum of the outputs over the views (ttach's ``sum``);
    * ``probs``: the mean of the softmax probabilities over K;
    * ``log_probs``: the mean of the log-softmax (the log of a geometric mean of the probabilities, up to a
      constant);
    * ``gmean``: the geometric mean of the probabilities, renormalised over K (probabilities);
    * ``max``, ``min``: the largest / smallest output over the views;
    * ``tsharpen``: the mean of the probabilities raised to ``temperature`` (< 1 flattens confident views'
      dominance, as in ttach's temperature sharpening).

    Args:
        outputs: (B, n, K, ...) the model's outputs per view (logits for the softmax-based modes).
        weights: (B, n, 1, ...) non-negative weights broadcastable to ``outputs`` (e.g. how much of each pixel each
            view saw); None for equal weights. Where every view has weight 0 the result is 0 (uniform
            probabilities for ``gmean``).
        temperature: the exponent of ``tsharpen``, > 0.
    """
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if outputs.dim() < 3:
        raise ValueError(f"outputs must be (B, n, K, ...), got shape {tuple(outputs.shape)}")
    if merge in ("max", "min"):
        if weights is None:
            return outputs.amax(1) if merge == "max" else outputs.amin(1)
        fill = -torch.inf if merge == "max" else torch.inf
        masked = outputs.masked_fill(weights.expand_as(outputs) <= 0, fill)
        merged = masked.amax(1) if merge == "max" else masked.amin(1)
        return torch.where(torch.isfinite(merged), merged, torch.zeros_like(merged))
    if merge in ("logits", "mean"):
        values = outputs
    elif merge == "probs":
        values = F.softmax(outputs, dim=2)
    elif merge == "tsharpen":
        values = F.softmax(outputs, dim=2) ** temperature
    else:  # log_probs, gmean
        values = F.log_softmax(outputs, dim=2)
    if merge == "sum":
        return outputs.sum(1) if weights is None else (outputs * weights).sum(1)
    if weights is None:
        merged = values.mean(1)
    else:
        total = weights.sum(1)
        merged = (values * weights).sum(1) / total.clamp_min(torch.finfo(total.dtype).tiny)
        merged = torch.where(total > 0, merged, torch.zeros_like(merged))
    return F.softmax(merged, dim=1) if merge == "gmean" else merged


def _check_chunk_size(chunk_size: int | str | None) -> int | str | None:
    if chunk_size is None or chunk_size == "auto":
        return chunk_size
    return check_positive_int(chunk_size, "chunk_size")


def _in_chunks(model: nn.Module, images: torch.Tensor, chunk_size: int | str | None, batch: int) -> torch.Tensor:
    """model(images), in chunks of at most ``chunk_size`` images: None for all at once, ``auto`` for
    max(B, n) of the B·n views (a plain loop's batch, at least one input's n views)."""
    if chunk_size == "auto":
        chunk_size = max(batch, images.shape[0] // batch)
    if chunk_size is None or images.shape[0] <= chunk_size:
        return model(images)
    return torch.cat([model(chunk) for chunk in images.split(chunk_size)])


class _ViewEnsemble(nn.Module):
    """What both wrappers share: the model, the augmenter, the number of views, the merge and the chunking."""

    def __init__(
        self,
        model: nn.Module,
        aug: nn.Module,
        n_copies: int,
        merge: str,
        chunk_size: int | str | None,
        temperature: float,
        n_samples: int | None = None,
    ) -> None:
        super().__init__()
        merge_predictions(torch.zeros(1, 1, 1), merge, temperature=temperature)  # refuses bad options now
        self.model = model
        self.aug = aug
        if n_samples is not None:
            warnings.warn(
                "n_samples is deprecated: views per input are n_copies, as in InstaAug and aug(x, n_copies=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            n_copies = n_samples
        self.n_copies = check_positive_int(n_copies, "n_copies")
        self.merge = merge
        self.temperature = temperature
        self.chunk_size = _check_chunk_size(chunk_size)

    @property
    def n_samples(self) -> int:
        """Deprecated name of ``n_copies``."""
        return self.n_copies

    def _outputs(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        """The model's outputs for views (N, C, H, W) of ``batch`` inputs, in chunks of ``chunk_size``."""
        return _in_chunks(self.model, images, self.chunk_size, batch)


class TTAWrapper(_ViewEnsemble):
    """Wraps a model so that its forward merges the predictions of ``n_copies`` augmented views per input.

    φ runs once per input and all B·n views are drawn in one call; they go through the model in chunks of
    ``chunk_size`` views. Views are sampled without gradient. The wrapper holds the model and the augmenter as
    submodules, so ``.eval()`` and ``.to()`` reach both.

    Args:
        model: maps images (N, C, H, W) to logits (N, K).
        aug: an augmenter (``InstaAug``, ``RandomAugment``, ...) called as ``aug(x, n_copies=n)``.
        n_copies: views per input (``n_samples``, its old name, still works with a DeprecationWarning).
        merge: ``logits`` (mean of logits, default) or another of ``MERGE_MODES``; see ``merge_predictions``.
        chunk_size: the most views per model call: ``auto`` (default) for max(B, n) — as many as a loop over the
            views would send, so that the wrapper is never slower than that loop on models whose throughput falls
            with the batch (a ResNet-18 on CPU) while a single input's views still go together —, an int, or None
            for all B·n at once (fastest for small models).
        temperature: the exponent of the ``tsharpen`` merge.
        views: ``sample`` (default) draws ``n_copies`` views from the augmenter; ``top`` takes its
            ``n_copies`` most probable crops (deterministic; needs an ``InstaAug`` with ``crop``).
    """

    def __init__(
        self,
        model: nn.Module,
        aug: nn.Module,
        n_copies: int = 10,
        merge: str = "logits",
        chunk_size: int | str | None = "auto",
        views: str = "sample",
        temperature: float = 0.5,
        *,
        n_samples: int | None = None,
    ) -> None:
        super().__init__(model, aug, n_copies, merge, chunk_size, temperature, n_samples)
        if views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {views!r}")
        if views == "top" and not (isinstance(aug, InstaAug) and aug.config.has_crop):
            raise ValueError(f"views='top' needs an InstaAug with learned crops, got {type(aug).__name__}")
        self.views = views

    def view_logits(self, images: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """The model's logits (N, K) for views (N, C, H, W) of ``batch`` inputs, in chunks of ``chunk_size``."""
        return self._outputs(images, batch or images.shape[0])

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] → merged predictions (B, K); ``y`` only for class-conditional augmenters."""
        with torch.no_grad():
            if self.views == "top":
                images = self.aug.top_views(x, self.n_copies, y)
            else:
                images = self.aug(x, y, n_copies=self.n_copies, generator=generator).images
        logits = self.view_logits(images, x.shape[0])
        return merge_predictions(logits.view(x.shape[0], self.n_copies, -1), self.merge, temperature=self.temperature)


class DenseTTAWrapper(_ViewEnsemble):
    """Test-time augmentation for dense prediction (segmentation, heat maps): the model's output on each of
    ``n_copies`` views is mapped back to the input's frame (``AugmentOutput.to_input``) and the views are merged
    pixel by pixel, each weighted by how much of the pixel it saw.

    Args:
        model: maps images (N, C, h, w) to dense outputs (N, K, h', w'); outputs at another size than the views
            (e.g. a stride-4 head) are resized bilinearly to the views' size first.
        aug: an augmenter called as ``aug(x, n_copies=n)``; its geometric views are inverted exactly.
        n_copies: sampled views per input (``n_samples``: its deprecated old name).
        merge: one of ``MERGE_MODES`` (see ``merge_predictions``); ``logits`` by default.
        chunk_size: the most views per model call: ``auto`` (default; max(B, n), see ``TTAWrapper``), an int, or
            None for all at once.
        temperature: the exponent of the ``tsharpen`` merge.
        include_identity: also use the input itself as a view (weight 1 everywhere), so that every pixel has a
            prediction even where no sampled view (e.g. a learned crop) saw it.
    """

    def __init__(
        self,
        model: nn.Module,
        aug: nn.Module,
        n_copies: int = 10,
        merge: str = "logits",
        chunk_size: int | str | None = "auto",
        temperature: float = 0.5,
        include_identity: bool = True,
        *,
        n_samples: int | None = None,
    ) -> None:
        super().__init__(model, aug, n_copies, merge, chunk_size, temperature, n_samples)
        if not isinstance(include_identity, bool):
            raise TypeError(f"include_identity must be True or False, got {include_identity!r}")
        self.include_identity = include_identity

    def _dense(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        out = self._outputs(images, batch)
        if out.dim() != 4 or out.shape[0] != images.shape[0]:
            raise ValueError(f"the model must return dense outputs (N, K, h, w), got shape {tuple(out.shape)}")
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def view_outputs(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The views' outputs in the input's frame (B, v, K, H, W) and their coverage (B, v, 1, H, W), v =
        ``n_copies`` (+ 1 for the input itself, first, when ``include_identity``)."""
        batch, size = x.shape[0], x.shape[-2:]
        with torch.no_grad():
            out = self.aug(x, y, n_copies=self.n_copies, generator=generator)
        values, coverage = out.to_input(self._dense(out.images, batch))
        values = values.view(batch, self.n_copies, *values.shape[1:])
        coverage = coverage.view(batch, self.n_copies, *coverage.shape[1:])
        if self.include_identity:
            own = self._dense(x, batch)[:, None]
            values = torch.cat((own, values), 1)
            coverage = torch.cat((coverage.new_ones(batch, 1, 1, *size), coverage), 1)
        return values, coverage

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] → merged dense predictions (B, K, H, W)."""
        values, coverage = self.view_outputs(x, y, generator)
        return merge_predictions(values, self.merge, coverage, self.temperature)
