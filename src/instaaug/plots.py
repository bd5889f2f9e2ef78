"""Figures of what was learned. Every function writes a PNG and returns its path; matplotlib runs headless."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from .distributed import is_main_process
from .distributions import CropCategorical, Product
from .targets import Targets
from .transforms import FAMILIES, adjust_hsv


def to_image(x: torch.Tensor):
    """An image tensor (C, H, W) in [0, 1] as an array for ``imshow`` ((H, W, 3) or (H, W))."""
    x = x.detach().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` to ``path`` (parents created) and close it; under torch.distributed, rank 0 alone writes."""
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --- rotation (the paper's Figure 5) -------------------------------------------------------------------------------

_METHOD_COLOURS = {
    "instaaug": "tab:red",
    "augerino": "tab:blue",
    "random": "tab:green",
    "none": "tab:grey",
    "uniform": "tab:red",
    "mixture": "tab:purple",
    "flow": "tab:orange",
}


def plot_rotation_arcs(
    images: torch.Tensor,
    angles: torch.Tensor,
    labels: torch.Tensor,
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]],
    path: str | os.PathLike,
) -> Path:
    """Learned rotation ranges per example (the paper's Figure 5).

    For each image (N, C, H, W) with tilt a (N,) from its class orientation, a polar plot shows every method's
    learned interval [low, high] (N,) as a coloured arc (0 = the image as shown, counter-clockwise positive)
    and the label-preserving interval [-π/2 - a, π/2 - a] as a grey arc underneath.
    """
    n = images.shape[0]
    fig = plt.figure(figsize=(2.1 * n, 4.3))
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        ax.imshow(to_image(images[i]))
        ax.set_title(f"class {int(labels[i])}, a = {float(angles[i]):+.2f}", fontsize=8)
        ax.axis("off")
        polar = fig.add_subplot(2, n, n + i + 1, projection="polar")
        polar.set_theta_zero_location("N")
        polar.set_theta_direction(1)
        a = float(angles[i])
        polar.bar(-a, math.pi, width=math.pi, bottom=0.2, color="lightgrey", label="label-preserving")
        for ring, (method, (low, high)) in enumerate(ranges.items()):
            lo, hi = float(low[i]), float(high[i])
            polar.bar(
                (lo + hi) / 2,
                0.25,
                width=hi - lo,
                bottom=0.45 + 0.3 * ring,
                color=_METHOD_COLOURS.get(method, f"C{ring}"),
                label=method,
            )
        polar.set_ylim(0, 0.45 + 0.3 * len(ranges))
        polar.set_yticks([])
        polar.set_xticks([0, math.pi / 2, math.pi, 3 * math.pi / 2], ["0", "", "π", ""], fontsize=7)
    handles, names = fig.axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.suptitle("learned rotation ranges per test image (grey: label-preserving range)", fontsize=10)
    return save_figure(fig, path)


# --- colour (the paper's Figure D.1) -------------------------------------------------------------------------------


def plot_colour_ranges(
    images: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    names: list[str] | tuple[str, ...],
    path: str | os.PathLike,
    *,
    labels: list[str] | tuple[str, ...] | None = None,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    reference_label: str = "reference",
    n_views: int = 5,
    title: str | None = None,
) -> Path:
    """Learned colour ranges per example (the paper's Figure D.1).

    One row per image of ``images`` (N, 3, H, W): the image; ``n_views`` renderings of it at hue shifts evenly
    spaced across its learned hue interval (when ``"hue"`` is among ``names``); and one panel per transform
    dimension with the learned interval [low, high] (N, D) drawn as a bar over the family's valid range.

    Args:
        images: (N, 3, H, W) in [0, 1].
        low, high: (N, D) the learned intervals, columns named by ``names`` (e.g. ``("hue", "saturation",
            "value")``).
        names: the D parameter names (families of ``instaaug.transforms.FAMILIES``).
        path: where to write the PNG.
        labels: a title per row (e.g. the class), or None.
        reference: optional intervals (D,), (D,) shared by every row (e.g. Augerino's global range), drawn as a
            grey bar under each learned one.
        reference_label: the legend entry of ``reference``.
        n_views: hue-shifted renderings per row.
        title: the figure's title.
    """
    images, low, high = images.detach().cpu().float(), low.detach().cpu().float(), high.detach().cpu().float()
    n, dims = images.shape[0], len(names)
    if low.shape != (n, dims) or high.shape != (n, dims):
        raise ValueError(f"low and high must be ({n}, {dims}), got {tuple(low.shape)} and {tuple(high.shape)}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"need one label per image ({n}), got {len(labels)}")
    hue_col = list(names).index("hue") if "hue" in names else None
    views = n_views if hue_col is not None else 0
    # Columns: the image, the hue-shifted views, a narrow gap, then one wide panel per dimension.
    ratios = [1.0] * (1 + views) + [0.25] + [2.2] * dims
    fig = plt.figure(figsize=(0.95 * sum(ratios), 1.0 * n + 0.9))
    grid = fig.add_gridspec(n, len(ratios), width_ratios=ratios, hspace=0.45, wspace=0.3)
    for i in range(n):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(to_image(images[i]), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_ylabel(labels[i], fontsize=8, rotation=0, ha="right", va="center")
        if i == 0:
            ax.set_title("input", fontsize=8)
        if views:
            shifts = torch.linspace(float(low[i, hue_col]), float(high[i, hue_col]), views)
            shifted = adjust_hsv(images[i : i + 1].expand(views, -1, -1, -1), hue=shifts)
            for j in range(views):
                ax = fig.add_subplot(grid[i, 1 + j])
                ax.imshow(to_image(shifted[j]), cmap="gray", vmin=0, vmax=1)
                ax.axis("off")
                ax.set_title(f"hue {float(shifts[j]):+.2f}", fontsize=6, pad=2)
        for d, name in enumerate(names):
            family = next((f for f in FAMILIES.values() if name in f.params), None)
            bounds = family.bounds if family is not None else (float(low[:, d].min()), float(high[:, d].max()))
            ax = fig.add_subplot(grid[i, 2 + views + d])
            if reference is not None:
                r_lo, r_hi = float(reference[0][d]), float(reference[1][d])
                ax.barh(-0.45, r_hi - r_lo, left=r_lo, height=0.35, color="lightgrey", label=reference_label)
            lo, hi = float(low[i, d]), float(high[i, d])
            ax.barh(0.1, hi - lo, left=lo, height=0.6, color="tab:red", label="learned (this input)")
            ax.axvline(0, color="black", lw=0.6)
            ax.set_xlim(*bounds)
            ax.set_ylim(-0.8, 0.6)
            ax.set_yticks([])
            # The width in the panel's title, where it never covers the bar.
            width = f"width {hi - lo:.2f}"
            ax.set_title(f"{name}\n{width}" if i == 0 else width, fontsize=7, pad=2)
            ax.set_xticks([bounds[0] / 2, 0, bounds[1] / 2])
            ax.tick_params(axis="x", labelsize=6, length=2, pad=1)
            if i < n - 1:
                ax.set_xticklabels([])
            else:
                unit = f" ({family.unit})" if family is not None else ""
                ax.set_xlabel(f"{name}{unit}", fontsize=8)
    handles, legend_names = fig.axes[-1].get_legend_handles_labels()
    fig.legend(handles, legend_names, loc="lower right", ncol=len(legend_names), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# --- crops (the paper's Figure 6) ----------------------------------------------------------------------------------


@torch.no_grad()
def plot_crop_examples(
    aug: torch.nn.Module,
    images: torch.Tensor,
    object_boxes: torch.Tensor | None,
    path: str | os.PathLike,
    samples: int = 4,
    seed: int = 0,
) -> Path:
    """Learned crop distributions (the paper's Figure 6): per image, a crop-centre density map and sampled crops.

    Args:
        aug: an ``InstaAug`` with learned crops (alone or with other families).
        images: (N, C, H, W) in [0, 1].
        object_boxes: optional (N, 4) object boxes (x0, y0, x1, y1) in pixels, drawn dashed.
        samples: sampled crops drawn per image.

    Row 1: each image with the probability of every candidate spread over its box centre's cell, as a heat map
    (the density of crop centres). Row 2: the image with ``samples`` sampled crops drawn as rectangles.
    """
    from matplotlib.patches import Rectangle

    was_training = aug.training
    aug.eval()
    dist = aug.distribution(images)
    aug.train(was_training)
    if isinstance(dist, Product):
        dist = dist.part(CropCategorical)
    n, (h, w) = images.shape[0], images.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    drawn = dist.sample((samples,), generator)  # (samples, N, 4)
    # Crop-centre density: each candidate's probability at its centre pixel, smoothed over a few pixels.
    centres = (dist.boxes[:, :2] * torch.tensor([w, h])).long().clamp(max=torch.tensor([w - 1, h - 1]))
    density = torch.zeros(n, h * w).index_add_(1, centres[:, 1] * w + centres[:, 0], dist.probs.float())
    kernel = torch.ones(1, 1, 5, 5) / 25
    density = torch.nn.functional.conv2d(density.view(n, 1, h, w), kernel, padding=2)[:, 0]
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(to_image(images[i]), cmap="gray")
        top.imshow(density[i].numpy(), cmap="magma", alpha=0.6)
        top.set_title(f"H = {float(dist.entropy()[i]):.2f}", fontsize=8)
        bottom.imshow(to_image(images[i]), cmap="gray")
        for k in range(samples):
            cx, cy, bw, bh = (float(v) for v in drawn[k, i])
            bottom.add_patch(
                Rectangle(((cx - bw / 2) * w - 0.5, (cy - bh / 2) * h - 0.5), bw * w, bh * h, fill=False, color="red")
            )
        if object_boxes is not None:
            x0, y0, x1, y1 = (float(v) for v in object_boxes[i])
            for ax in (top, bottom):
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="cyan", ls="--"))
        for ax in (top, bottom):
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.axis("off")
    axes[0, 0].set_ylabel("crop-centre density")
    axes[1, 0].set_ylabel(f"{samples} sampled crops")
    fig.suptitle("learned crops: centre density (top), sampled crops in red, object box dashed", fontsize=9)
    return save_figure(fig, path)


# --- dense targets (segmentation) ----------------------------------------------------------------------------------


def plot_segmentation_views(
    aug: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    path: str | os.PathLike,
    samples: int = 3,
    seed: int = 0,
    ignore_index: int = 255,
) -> Path:
    """Sampled views of images with their masks carried along: per row an input with its mask, then ``samples``
    views drawn from ``aug`` with the mask as each view shows it (labels > 0 in colour, padding hatched grey).

    Args:
        aug: any augmenter.
        images: (N, C, H, W) in [0, 1].
        masks: (N, 1, H, W) integer labels (0: background).
    """
    was_training = aug.training
    aug.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = aug(
            images, n_copies=samples, generator=generator, targets=Targets(masks=masks, ignore_index=ignore_index)
        )
    aug.train(was_training)
    n = images.shape[0]
    view_masks = out.targets.masks.view(n, samples, *masks.shape[1:])
    views = out.images.view(n, samples, *out.images.shape[1:])
    fig, axes = plt.subplots(n, samples + 1, figsize=(1.9 * (samples + 1), 1.9 * n), squeeze=False)
    labels = int(masks.max()) + 1 if masks.numel() else 1

    def show(ax: plt.Axes, image: torch.Tensor, mask: torch.Tensor) -> None:
        ax.imshow(to_image(image), cmap="gray", vmin=0, vmax=1)
        m = mask[0].cpu().long()
        label = torch.where((m > 0) & (m != ignore_index), m, 0).float().numpy()
        ax.imshow(label, cmap="tab20", vmin=0, vmax=max(labels, 2), alpha=(label > 0) * 0.55, interpolation="nearest")
        ax.imshow(
            (m == ignore_index).float().numpy(),
            cmap="Greys",
            vmin=0,
            vmax=2.5,
            alpha=(m == ignore_index).float().numpy() * 0.8,
        )
        ax.axis("off")

    for i in range(n):
        show(axes[i, 0], images[i], masks[i])
        for k in range(samples):
            show(axes[i, k + 1], views[i, k], view_masks[i, k])
    axes[0, 0].set_title("input + mask", fontsize=8)
    for k in range(samples):
        axes[0, k + 1].set_title(f"view {k + 1}", fontsize=8)
    fig.suptitle("learned views with their masks (digit labels in colour, padding grey)", fontsize=9)
    return save_figure(fig, path)


# --- any augmenter: sampled views ----------------------------------------------------------------------------------


@torch.no_grad()
def plot_sampled_views(
    aug: torch.nn.Module,
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    n_views: int = 6,
    labels: list[str] | tuple[str, ...] | None = None,
    seed: int = 0,
) -> Path:
    """Views an augmenter draws: one row per image of ``images`` (N, C, H, W) in [0, 1], the image and then
    ``n_views`` views sampled from p(τ; φ(x)) (in eval mode), with ``labels`` as row titles."""
    was_training = aug.training
    aug.eval()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    try:
        views = aug(images, n_copies=n_views, generator=generator).images.cpu()
    finally:
        aug.train(was_training)
    n = images.shape[0]
    fig, axes = plt.subplots(n, n_views + 1, figsize=(1.2 * (n_views + 1), 1.25 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_image(images[i]), cmap="gray")
        if labels is not None:
            axes[i, 0].set_ylabel(labels[i], fontsize=7, rotation=0, ha="right", va="center")
        for j in range(n_views):
            axes[i, j + 1].imshow(to_image(views[i * n_views + j]), cmap="gray")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=8)
    for j in range(n_views):
        axes[0, j + 1].set_title(f"view {j + 1}", fontsize=8)
    return save_figure(fig, path)


# --- multimodal rotation densities -------------------------------------------------------------------------------


def plot_rotation_densities(
    images: torch.Tensor,
    angles: torch.Tensor,
    truth: torch.Tensor,
    densities: dict[str, torch.Tensor],
    titles: list[str],
    path: str | os.PathLike,
) -> Path:
    """Learned densities over rotations, one column per image: the image, then a polar plot of each method's
    density (N, R) at ``angles`` (R,) (0 = the image as shown, counter-clockwise positive), each scaled to its own
    maximum so that narrow and wide densities both show their shape, over the true label-preserving rotations
    ``truth`` (N, R) shaded grey."""
    n = images.shape[0]
    fig = plt.figure(figsize=(2.3 * n, 4.8))
    theta = angles.cpu().numpy()
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        ax.imshow(to_image(images[i]), cmap="gray")
        ax.set_title(titles[i], fontsize=8)
        ax.axis("off")
        polar = fig.add_subplot(2, n, n + i + 1, projection="polar")
        truth_curve = truth[i].float().cpu().numpy()
        polar.fill_between(theta, 0, truth_curve, color="lightgrey", step="mid", label="true set")
        for name, density in densities.items():
            shape = density[i] / density[i].max().clamp_min(1e-12)
            polar.plot(theta, shape.cpu().numpy(), lw=1.1, label=name, color=_METHOD_COLOURS.get(name))
        polar.set_ylim(0, 1.05)
        polar.set_yticks([])
        polar.tick_params(labelsize=6)
    handles, labels = fig.axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    return save_figure(fig, path)
