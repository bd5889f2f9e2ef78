"""Invariance-conditioned feature extractors f(x, i): one interface, two architectures.

* ``ConditionedResNet``: a ResNet-18-style network whose every convolution is a mixture of K basis kernels,
  W(i) = W₀ + Σₖ cₖ(i)·Wₖ, with coefficients c(i) from a small MLP of i per convolution. This is the paper's
  per-convolution hypernetwork written in its equivalent, much smaller form. Optionally (``film``) every
  normalisation is followed by a per-channel scale and shift linear in i (FiLM, as in conditional batch norm).
* ``ConditionedViT``: a small Vision Transformer whose tokens are prefixed by P invariance prompt tokens, produced
  from i by an MLP.

Both map x (B, C, H, W) and i ((M,) shared by the batch, or (B, M) per sample, or a mapping group → value) to
features (B, D). Inputs may be images in [0, 1] or spectrograms (B, 1, F, T); the first layer normalises them
with a fixed mean and standard deviation. ``save``/``load`` write safetensors weights and a JSON config.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..io import load_tensors, read_json, save_tensors, write_json
from ..models import NORMS, InputNorm, make_norm
from ..networks import count_parameters
from ..validation import dataclass_from_dict
from .space import check_inputs, check_invariance

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


class ConditionedBackbone(nn.Module):
    """The interface of an invariance-conditioned feature extractor: ``f(x, i) → features``.

    Attributes:
        config: the architecture's config dataclass (it fully determines the parameters' shapes).
        groups: the M group names, the meaning of the entries of i.
        feature_dim: D, the feature size.
    """

    kind: ClassVar[str] = ""
    config: Any

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.config.groups)

    @property
    def invariance_dim(self) -> int:
        """M, the length of i."""
        return len(self.config.groups)

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, i: Any) -> torch.Tensor:
        """Features (B, D) of inputs x (B, C, H, W) under invariance i: (M,), (B, M) or {group: value}.

        Raises ValueError/TypeError on a bad x or i (wrong shape, length, group names, values outside [0, 1]).
        """
        check_inputs(x, self.config.in_channels)
        i = check_invariance(i, self.groups, x.shape[0]).to(device=x.device, dtype=x.dtype)
        return self.features(x, i)

    def features(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """``forward`` without the checks: x (B, C, H, W), i (M,) or (B, M) float tensors → (B, D)."""
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters: ``total``, and ``conditioning`` (those that only exist to depend on i)."""
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``directory/weights.safetensors`` and ``directory/config.json`` (atomically; no pickle)."""
        directory = Path(directory)
        save_tensors(directory / WEIGHTS_FILE, self.state_dict())
        write_json(directory / CONFIG_FILE, {"kind": self.kind, "config": dataclasses.asdict(self.config)})

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> ConditionedBackbone:
        """Rebuild a backbone written by ``save`` (of this class, or of any kind when called on the base)."""
        return load_backbone(directory, device, expect=cls)


# ------------------------------------------------------------------------------------------------------------------
# ResNet with mixture-of-kernels convolutions


class MixtureConv2d(nn.Module):
    """A convolution whose kernel depends on i: W(i) = W₀ + Σₖ cₖ(i)·Wₖ, c = MLP(i) (M → hidden → K).

    With i (M,) the batch shares one kernel (one ordinary convolution); with i (B, M) every sample gets its own
    kernel, applied in one grouped convolution.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, invariance_dim: int, num_kernels: int, hidden: int
    ) -> None:
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.base = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.basis = nn.Parameter(torch.empty(num_kernels, c_out, c_in, kernel, kernel))
        nn.init.kaiming_normal_(self.base, nonlinearity="relu")
        # Basis kernels on the scale of the base kernel, so that corners give clearly different convolutions.
        nn.init.kaiming_normal_(self.basis.view(num_kernels * c_out, c_in, kernel, kernel), nonlinearity="relu")
        self.coefficients = nn.Sequential(nn.Linear(invariance_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_kernels))

    def kernel(self, i: torch.Tensor) -> torch.Tensor:
        """The kernel(s) for i (M,) → (C_out, C_in, k, k), or i (B, M) → (B, C_out, C_in, k, k)."""
        c = self.coefficients(i)
        return self.base + torch.tensordot(c, self.basis, dims=1)

    def forward(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W), i (M,) or (B, M) → (B, C_out, H', W')."""
        w = self.kernel(i)
        if w.dim() == 4:
            return F.conv2d(x, w, stride=self.stride, padding=self.padding)
        b, c_out = w.shape[:2]
        out = F.conv2d(
            x.reshape(1, -1, *x.shape[2:]), w.flatten(0, 1), stride=self.stride, padding=self.padding, groups=b
        )
        return out.view(b, c_out, *out.shape[2:])

    def extra_repr(self) -> str:
        k, c_out, c_in, kh, _ = self.basis.shape
        return f"{c_in}, {c_out}, kernel={kh}, stride={self.stride}, num_kernels={k}"


class ConditionedNorm(nn.Module):
    """A normalisation followed by an i-dependent per-channel scale and shift (FiLM): (1 + γ(i))·norm(h) + β(i),
    with γ and β linear in i and zero at initialisation (so it starts as the plain normalisation)."""

    def __init__(self, norm: str, channels: int, invariance_dim: int) -> None:
        super().__init__()
        self.norm = make_norm(norm, channels)
        self.film = nn.Linear(invariance_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """h (B, C, H, W), i (M,) or (B, M) → (B, C, H, W)."""
        gamma, beta = self.film(i).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=-3)  # (C, 1, 1) or (B, C, 1, 1) each
        return self.norm(h) * (1 + gamma) + beta


def conditioned_norm(norm: str, channels: int, invariance_dim: int, film: bool) -> nn.Module:
    """A ``ConditionedNorm`` with ``film``, else the plain normalisation (whose state-dict keys older saved
    backbones have)."""
    return ConditionedNorm(norm, channels, invariance_dim) if film else make_norm(norm, channels)


def apply_norm(norm: nn.Module, h: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``norm(h, i)`` for a ``ConditionedNorm``, ``norm(h)`` for a plain normalisation."""
    return norm(h, i) if isinstance(norm, ConditionedNorm) else norm(h)


class ConditionedBlock(nn.Module):
    """A ResNet basic block (two 3×3 convolutions, a 1×1 projection shortcut when the shape changes), with
    mixture-of-kernels convolutions (and, with ``film``, FiLM-conditioned normalisations)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, film: bool = False, **conv: int) -> None:
        super().__init__()
        m = conv["invariance_dim"]
        self.conv1 = MixtureConv2d(c_in, c_out, 3, stride, **conv)
        self.norm1 = conditioned_norm(norm, c_out, m, film)
        self.conv2 = MixtureConv2d(c_out, c_out, 3, 1, **conv)
        self.norm2 = conditioned_norm(norm, c_out, m, film)
        self.shortcut = MixtureConv2d(c_in, c_out, 1, stride, **conv) if stride != 1 or c_in != c_out else None
        self.norm_sc = conditioned_norm(norm, c_out, m, film) if self.shortcut is not None else None

    def forward(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W), i (M,) or (B, M) → (B, C_out, H / stride, W / stride)."""
        out = F.relu(apply_norm(self.norm1, self.conv1(x, i), i))
        out = apply_norm(self.norm2, self.conv2(out, i), i)
        skip = x if self.shortcut is None else apply_norm(self.norm_sc, self.shortcut(x, i), i)
        return F.relu(out + skip)


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of a ``ConditionedResNet``.

    Attributes:
        groups: the names of the entries of i (M = len(groups)).
        in_channels: C of the inputs.
        widths: channels of each stage (ResNet-18: 64, 128, 256, 512).
        blocks: basic blocks per stage (ResNet-18: 2, 2, 2, 2).
        num_kernels: K, the basis kernels of every convolution.
        hidden: width of each convolution's coefficient MLP.
        norm: ``"layer"`` (default: no running statistics, so eval mode equals train mode for every i),
            ``"batch"`` or ``"none"``.
        input_mean, input_std: the fixed input normalisation of the first layer.
        film: follow every normalisation by a per-channel scale and shift linear in i (``ConditionedNorm``):
            conditioning that can keep or drop a whole feature channel per i. Off by default: on the audio
            experiment it helped one seed's loudness and hurt another's (the README has the measurements).
    """

    groups: tuple[str, ...] = ("spatial", "appearance")
    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    num_kernels: int = 4
    hidden: int = 16
    norm: str = "layer"
    input_mean: float = 0.5
    input_std: float = 0.25
    film: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        if not isinstance(self.film, bool):
            raise TypeError(f"film must be a bool, got {self.film!r}")
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ValueError(f"widths and blocks must be non-empty and equally long, got {self.widths}, {self.blocks}")
        for key in ("widths", "blocks"):
            if any(not isinstance(v, int) or v < 1 for v in getattr(self, key)):
                raise ValueError(f"{key} must be positive ints, got {getattr(self, key)}")
        for key in ("num_kernels", "hidden"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an int ≥ 1, got {getattr(self, key)!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @classmethod
    def resnet18(cls, **overrides: Any) -> ResNetConfig:
        """The ResNet-18 sizes (widths 64–512, two blocks per stage), with a 3×3 stem for small images."""
        return cls(**{"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), **overrides})


def _check_common(config: Any) -> None:
    groups = config.groups
    if isinstance(groups, str) or not groups or len(set(groups)) != len(groups):
        raise ValueError(f"groups must be a non-empty tuple of distinct names, got {groups!r}")
    if not isinstance(config.in_channels, int) or config.in_channels < 1:
        raise ValueError(f"in_channels must be an int ≥ 1, got {config.in_channels!r}")
    if not config.input_std > 0:
        raise ValueError(f"input_std must be > 0, got {config.input_std!r}")


class ConditionedResNet(ConditionedBackbone):
    """ResNet-18-style f(x, i): a 3×3 stem, stages of basic blocks (stride 1 then 2 per later stage), global
    average pooling; every convolution a mixture of ``num_kernels`` kernels conditioned on i. Features (B, widths[-1]).
    """

    kind = "resnet"

    def __init__(self, config: ResNetConfig | None = None, **options: Any) -> None:
        super().__init__()
        self.config = config if config is not None else ResNetConfig(**options)
        c = self.config
        conv = {"invariance_dim": len(c.groups), "num_kernels": c.num_kernels, "hidden": c.hidden}
        self.input_norm = InputNorm(c.in_channels, c.input_mean, c.input_std)
        self.stem = MixtureConv2d(c.in_channels, c.widths[0], 3, 1, **conv)
        self.stem_norm = conditioned_norm(c.norm, c.widths[0], len(c.groups), c.film)
        blocks, c_in = [], c.widths[0]
        for s, (c_out, n) in enumerate(zip(c.widths, c.blocks, strict=True)):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(ConditionedBlock(c_in, c_out, stride, c.norm, c.film, **conv))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)

    @property
    def feature_dim(self) -> int:
        return self.config.widths[-1]

    def features(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), i (M,) or (B, M) → globally pooled features (B, widths[-1])."""
        h = F.relu(apply_norm(self.stem_norm, self.stem(self.input_norm(x), i), i))
        for block in self.blocks:
            h = block(h, i)
        return h.mean(dim=(2, 3))

    def parameter_counts(self) -> dict[str, int]:
        """``total`` trainable parameters; ``conditioning``: basis kernels, coefficient MLPs (beyond W₀) and FiLM
        layers; ``generated_kernel``: the size of the kernels W(i) they generate (what an unconditioned ResNet has)."""
        convs = [m for m in self.modules() if isinstance(m, MixtureConv2d)]
        generated = sum(m.base.numel() for m in convs)
        conditioning = sum(m.basis.numel() + count_parameters(m.coefficients) for m in convs)
        conditioning += sum(count_parameters(m.film) for m in self.modules() if isinstance(m, ConditionedNorm))
        return {"total": count_parameters(self), "conditioning": conditioning, "generated_kernel": generated}


# ------------------------------------------------------------------------------------------------------------------
# Vision Transformer with invariance prompt tokens


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ``ConditionedViT``.

    Attributes:
        groups: the names of the entries of i.
        in_channels: C of the inputs.
        image_size: (H, W) of the inputs (spectrograms: (F, T)); each must be a multiple of ``patch_size``.
        patch_size: side of the square patches.
        dim: token width D (also the feature size).
        depth: transformer layers.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: hidden width of each layer's MLP, as a multiple of ``dim``.
        prompt_tokens: P, the invariance prompt tokens produced from i.
        hidden: width of the MLP i → prompts.
        input_mean, input_std: the fixed input normalisation.
    """

    groups: tuple[str, ...] = ("spatial", "appearance")
    in_channels: int = 3
    image_size: tuple[int, int] = (24, 24)
    patch_size: int = 4
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    prompt_tokens: int = 1
    hidden: int = 32
    input_mean: float = 0.5
    input_std: float = 0.25

    def __post_init__(self) -> None:
        _check_common(self)
        if len(self.image_size) != 2 or any(s % self.patch_size for s in self.image_size):
            raise ValueError(f"image_size must be (H, W), multiples of patch_size {self.patch_size}: {self.image_size}")
        for key in ("patch_size", "dim", "depth", "heads", "mlp_ratio", "prompt_tokens", "hidden"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an int ≥ 1, got {getattr(self, key)!r}")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")


class ConditionedViT(ConditionedBackbone):
    """A small ViT f(x, i): tokens [CLS, P prompts from MLP(i), patches] with learned position embeddings, pre-norm
    transformer layers; features (B, dim) are the final-normalised CLS token."""

    kind = "vit"

    def __init__(self, config: ViTConfig | None = None, **options: Any) -> None:
        super().__init__()
        self.config = config if config is not None else ViTConfig(**options)
        c = self.config
        self.input_norm = InputNorm(c.in_channels, c.input_mean, c.input_std)
        self.patch = nn.Conv2d(c.in_channels, c.dim, c.patch_size, c.patch_size)
        n_patches = (c.image_size[0] // c.patch_size) * (c.image_size[1] // c.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.position = nn.Parameter(torch.randn(1, 1 + c.prompt_tokens + n_patches, c.dim) * 0.02)
        self.prompts = nn.Sequential(
            nn.Linear(len(c.groups), c.hidden), nn.GELU(), nn.Linear(c.hidden, c.prompt_tokens * c.dim)
        )
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, c.mlp_ratio * c.dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)

    @property
    def feature_dim(self) -> int:
        return self.config.dim

    def forward(self, x: torch.Tensor, i: Any) -> torch.Tensor:
        """Features (B, dim) of x (B, C, H, W) with (H, W) = ``config.image_size``, under i (see the base class)."""
        if isinstance(x, torch.Tensor) and x.dim() == 4 and tuple(x.shape[2:]) != tuple(self.config.image_size):
            raise ValueError(f"inputs must be {tuple(self.config.image_size)} for this ViT, got {tuple(x.shape[2:])}")
        return super().forward(x, i)

    def features(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), i (M,) or (B, M) → CLS features (B, dim)."""
        b, c = x.shape[0], self.config
        patches = self.patch(self.input_norm(x)).flatten(2).transpose(1, 2)
        prompts = self.prompts(i).view(-1, c.prompt_tokens, c.dim).expand(b, -1, -1)
        tokens = torch.cat((self.cls.expand(b, -1, -1), prompts, patches), 1) + self.position
        return self.norm(self.encoder(tokens)[:, 0])

    def parameter_counts(self) -> dict[str, int]:
        """``total`` trainable parameters; ``conditioning``: the prompt MLP and the prompts' position embeddings."""
        prompt_pos = self.config.prompt_tokens * self.config.dim
        return {"total": count_parameters(self), "conditioning": count_parameters(self.prompts) + prompt_pos}


# ------------------------------------------------------------------------------------------------------------------
# Registry, construction and loading

BACKBONES: dict[str, tuple[type[ConditionedBackbone], type]] = {
    "resnet": (ConditionedResNet, ResNetConfig),
    "vit": (ConditionedViT, ViTConfig),
}


def build_conditioned_backbone(kind: str, **config: Any) -> ConditionedBackbone:
    """A conditioned backbone by kind (``"resnet"`` or ``"vit"``) with config keyword values."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone {kind!r}; known backbones: {sorted(BACKBONES)}")
    cls, config_cls = BACKBONES[kind]
    return cls(dataclass_from_dict(config_cls, config, what=f"{kind} config"))


def load_backbone(
    directory: str | os.PathLike, device: str | torch.device = "cpu", *, expect: type | None = None
) -> ConditionedBackbone:
    """Rebuild a backbone written by ``ConditionedBackbone.save`` (in eval mode, on ``device``).

    Raises FileNotFoundError for a missing file and ValueError for a malformed or mismatching one.
    """
    directory = Path(directory)
    meta = read_json(directory / CONFIG_FILE)
    if not isinstance(meta, dict) or meta.get("kind") not in BACKBONES or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{directory / CONFIG_FILE} is not a conditioned-backbone config (kind {sorted(BACKBONES)})")
    model = build_conditioned_backbone(meta["kind"], **meta["config"])
    if expect is not None and expect is not ConditionedBackbone and not isinstance(model, expect):
        raise ValueError(f"{directory} holds a {type(model).__name__}, not a {expect.__name__}")
    state = load_tensors(directory / WEIGHTS_FILE)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{directory / WEIGHTS_FILE} does not match its config: {e}") from None
    return model.to(device).eval()


def build_backbone(kind: str, **config: Any) -> ConditionedBackbone:
    """Deprecated alias of ``build_conditioned_backbone`` (``instaaug.models.build_backbone`` is the unconditioned
    one; two functions of one name with different signatures confused users). Kept for one release."""
    warnings.warn(
        "instaaug.amortised.build_backbone is deprecated: use instaaug.amortised.build_conditioned_backbone",
        DeprecationWarning,
        stacklevel=2,
    )
    return build_conditioned_backbone(kind, **config)
