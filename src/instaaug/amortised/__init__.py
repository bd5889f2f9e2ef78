"""Amortised invariance learning (Chavhan et al., ICLR 2023): one feature extractor f(x, i) for every invariance.

Pre-training conditions a backbone on a vector i ∈ {0, 1}^M (one entry per augmentation group, see
``InvarianceSpace``) and trains it contrastively on views made by the groups that are on. Downstream the backbone
is frozen and ``InvarianceProbe`` learns a linear readout together with i ∈ [0, 1]^M, so each task picks the
invariances it needs.
"""

from .backbones import (
    BACKBONES,
    ConditionedBackbone,
    ConditionedNorm,
    ConditionedResNet,
    ConditionedViT,
    MixtureConv2d,
    ResNetConfig,
    ViTConfig,
    build_backbone,
    build_conditioned_backbone,
    load_backbone,
)
from .objectives import CornerQueues, MomentumEncoder, ProjectionHeads, moco_loss, nt_xent
from .pretrain import PretrainConfig, Pretrained, pretrain
from .probe import (
    InvarianceProbe,
    ProbeConfig,
    Readout,
    evaluate_fixed,
    extract_features,
    fit_readout,
    grid_search,
    metric_name,
    score,
)
from .space import (
    GROUPS,
    AugmentationGroup,
    CornerSampler,
    InvarianceSpace,
    audio_space,
    check_invariance,
    get_group,
    image_space,
    sound_space,
)

__all__ = [
    "BACKBONES",
    "GROUPS",
    "AugmentationGroup",
    "ConditionedBackbone",
    "ConditionedNorm",
    "ConditionedResNet",
    "ConditionedViT",
    "CornerQueues",
    "CornerSampler",
    "InvarianceProbe",
    "InvarianceSpace",
    "MixtureConv2d",
    "MomentumEncoder",
    "PretrainConfig",
    "Pretrained",
    "ProbeConfig",
    "ProjectionHeads",
    "Readout",
    "ResNetConfig",
    "ViTConfig",
    "audio_space",
    "build_backbone",
    "build_conditioned_backbone",
    "check_invariance",
    "evaluate_fixed",
    "extract_features",
    "fit_readout",
    "get_group",
    "grid_search",
    "image_space",
    "load_backbone",
    "metric_name",
    "moco_loss",
    "nt_xent",
    "pretrain",
    "score",
    "sound_space",
]
