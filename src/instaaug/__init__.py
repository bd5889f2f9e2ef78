"""instaaug: learned, input-dependent data augmentation and invariance for PyTorch."""

from .augment import Augmenter, AugmentOutput, InstaAug, InstaAugConfig
from .baselines import Augerino, NoAugment, RandomAugment
from .controller import EntropyController
from .crops import InstaAugCrop, RandomCrop
from .distributions import CropCategorical, UniformRanges
from .objective import AugerinoObjective, InstaAugObjective, ObjectiveTerms, TaskObjective
from .transforms import FAMILIES, TransformStack
from .tta import TTAWrapper

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "Augerino",
    "AugerinoObjective",
    "AugmentOutput",
    "Augmenter",
    "CropCategorical",
    "EntropyController",
    "InstaAug",
    "InstaAugConfig",
    "InstaAugCrop",
    "InstaAugObjective",
    "NoAugment",
    "ObjectiveTerms",
    "RandomAugment",
    "RandomCrop",
    "TTAWrapper",
    "TaskObjective",
    "TransformStack",
    "UniformRanges",
    "__version__",
]
