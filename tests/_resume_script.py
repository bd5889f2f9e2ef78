"""The training process of test_resume's SIGKILL test (a module of its own: the child imports only what it needs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from instaaug import EntropyController, InstaAug, InstaAugObjective
from instaaug.io import save_tensors
from instaaug.models import build_classifier
from instaaug.train import TrainConfig, train


def components(init_seed: int = 0):
    """Fresh f, φ and objective (``init_seed`` sets their initial weights)."""
    torch.manual_seed(init_seed)
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    aug = InstaAug(("rotation", "hue"), width=4, depth=2)
    objective = InstaAugObjective(EntropyController(*aug.entropy_range, lam_init=0.05, rate=1.1))
    return model, aug, objective


def dataset(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (n, 3, 8, 8) and binary labels (n,)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)


def config(**overrides) -> TrainConfig:
    """Two epochs of 4 steps on ``dataset()``."""
    values = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "aug_lr": 1e-2, "seed": 3, "progress": False}
    return TrainConfig(**{**values, **overrides})


def state(*modules) -> dict[str, torch.Tensor]:
    """Every module's state, as one flat dict."""
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def without_time(history: list[dict]) -> list[dict]:
    """History records without their wall times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def main(out: str, slow_after: str) -> None:
    """Train (resuming from ``out`` if it holds a checkpoint), slowed down after ``slow_after`` steps so that the
    test kills it mid-run; at the end write the final state and history into ``out``."""
    torch.set_num_threads(1)
    slow = int(slow_after)
    steps = [0]

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        steps[0] += 1
        if slow and steps[0] > slow:
            time.sleep(0.5)
        return F.cross_entropy(logits, y, reduction="none")

    model, aug, objective = components()
    history = train(
        model, aug, objective, dataset(), config(checkpoint_every=3), out_dir=out, resume=True, task_loss=loss
    )
    save_tensors(Path(out) / "final.safetensors", state(model, aug, objective))
    (Path(out) / "history.json").write_text(json.dumps(without_time(history)))
