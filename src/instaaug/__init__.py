"""instaaug: learned, input-dependent data augmentation and invariance for PyTorch."""

from .augment import Augmenter, AugmentOutput, InstaAug, InstaAugConfig
from .baselines import Augerino, NoAugment, RandomAugment
from .controller import EntropyController
from .distributions import UniformRanges
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
    "EntropyController",
    "InstaAug",
    "InstaAugConfig",
    "InstaAugObjective",
    "NoAugment",
    "ObjectiveTerms",
    "RandomAugment",
    "TTAWrapper",
    "TaskObjective",
    "TransformStack",
    "UniformRanges",
    "__version__",
]
