"""instaaug: learned, input-dependent data augmentation and invariance for PyTorch."""

from .augment import PRESETS, Augmenter, InstaAug, InstaAugConfig, InstaAugCrop
from .baselines import Augerino, NoAugment, RandomAugment, RandomCrop
from .compose import Then
from .controller import EntropyController
from .distributions import (
    CropCategorical,
    FlipBernoulli,
    FlowRanges,
    Product,
    TransformDistribution,
    UniformCrops,
    UniformMixture,
    UniformRanges,
)
from .objective import (
    AugerinoObjective,
    ContrastiveInstaAugObjective,
    InstaAugObjective,
    ObjectiveTerms,
    TaskObjective,
)
from .targets import Targets, ViewTargets
from .transforms import FAMILIES, TransformStack
from .tta import DenseTTAWrapper, TTAWrapper
from .views import AugmentOutput

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Augerino",
    "AugerinoObjective",
    "AugmentOutput",
    "Augmenter",
    "ContrastiveInstaAugObjective",
    "CropCategorical",
    "DenseTTAWrapper",
    "EntropyController",
    "FlipBernoulli",
    "FlowRanges",
    "InstaAug",
    "InstaAugConfig",
    "InstaAugCrop",
    "InstaAugObjective",
    "NoAugment",
    "ObjectiveTerms",
    "Product",
    "RandomAugment",
    "RandomCrop",
    "TTAWrapper",
    "Targets",
    "TaskObjective",
    "Then",
    "TransformDistribution",
    "TransformStack",
    "UniformCrops",
    "UniformMixture",
    "UniformRanges",
    "ViewTargets",
    "__version__",
]
