"""Built-in experiments, by name. Each module defines ``DESCRIPTION``, a ``Config`` dataclass with a
``quick()`` variant, and ``run(config, out_dir, data=None) -> dict`` writing ``metrics.json`` and figures."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

#: experiment name → module (imported on first use, so ``instaaug list`` stays fast).
EXPERIMENTS = {
    "rotation": "instaaug.experiments.rotation",
    "colour": "instaaug.experiments.colour",
    "crop": "instaaug.experiments.crop",
    "tta": "instaaug.experiments.tta",
    "amortised": "instaaug.experiments.amortised",
    "amortised-audio": "instaaug.experiments.amortised_audio",
    "segment": "instaaug.experiments.segment",
    "multimodal": "instaaug.experiments.multimodal",
    "contrastive": "instaaug.experiments.contrastive",
    "lighting": "instaaug.experiments.lighting",
}


#: Old experiment names, still accepted (with a DeprecationWarning) for one release: old name → new name.
RENAMED = {"color": "colour"}


def get_experiment(name: str) -> ModuleType:
    """The module of experiment ``name``; an unknown name raises a ValueError listing the known ones."""
    if name in RENAMED:
        warnings.warn(
            f"experiment {name!r} is now called {RENAMED[name]!r}; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        name = RENAMED[name]
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
