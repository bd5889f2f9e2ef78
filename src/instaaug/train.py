"""The training loop: f and φ trained together (or φ alone against a frozen f), one classifier pass per step.

A run is seeded per epoch (the shuffling and the augmentation samples of epoch e depend only on the seed, e and the
process's rank), writes one JSON line of metrics per epoch and an atomic checkpoint after every epoch (and every
``checkpoint_every`` steps), and resumes from that checkpoint, mid-epoch included, with the same result as an
uninterrupted run.

Distributed data parallel: launched with ``torchrun`` (or any initialised ``torch.distributed`` process group),
``train`` wraps f and φ in ``DistributedDataParallel``, gives each process an equal share of every global batch of
``batch_size`` inputs, seeds each rank's augmentation sampling differently, and averages the entropy fed to the λ
controller over the processes (see ``EntropyController``), so λ and all parameters stay identical on every rank.
Only rank 0 writes files.

Non-finite values: a NaN/Inf in the loss or in φ's output (its entropy; its sampled parameters reach the loss
through the views) sets a flag on the device, with the step it first happened at. The host reads the flag every
``log_every`` steps, at the end of every epoch and before every checkpoint, never in between: a check every step
would be a device synchronisation per step. A run that went non-finite therefore stops within ``log_every`` steps,
with an error naming the step, and never writes its (possibly corrupted) weights to a checkpoint.

Exactness: resuming gives bit-identical results (same process count and thread count). Distributed training with N
processes matches one process with the same global batch, up to float rounding, when the augmentation draws no
random numbers (e.g. ``NoAugment``), the classifier has no batch statistics (BatchNorm normalises per process) and
N divides the number of inputs; otherwise the ranks' different augmentation samples make it a different (equally
valid) run.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .augment import Augmenter
from .io import atomic_write_bytes, load_checkpoint, save_checkpoint
from .seeding import epoch_seed
from .step import OPTIMIZERS, make_optimisers, train_step
from .targets import Targets
from .validation import check_images, check_labels, check_positive_int, trusted_inputs

CHECKPOINT_FILE = "checkpoint.safetensors"
#: The checkpoint before the latest one, kept so that a damaged latest file never leaves a run without a good one.
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.safetensors"
METRICS_FILE = "metrics.jsonl"
#: TensorBoard event files go to ``out_dir/tensorboard`` (with ``TrainConfig.tensorboard``).
TENSORBOARD_DIR = "tensorboard"
_CHECKPOINT_FORMAT = "instaaug.train"
_CHECKPOINT_VERSION = 2
#: Settings that change a run's result: resuming with other values would silently mix two runs.
_RESULT_KEYS = (
    "epochs",
    "pretrain_epochs",
    "batch_size",
    "lr",
    "aug_lr",
    "aug_lr_schedule",
    "weight_decay",
    "seed",
    "amp",
    "optimizer",
    "momentum",
    "aug_lr_warmup_epochs",
    "aug_frozen_epochs",
)
AUG_LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Settings of ``train``.

    Attributes:
        epochs: joint training epochs (after ``pretrain_epochs``).
        pretrain_epochs: epochs of f alone on unaugmented images first (the paper's recipe for crops).
        batch_size: inputs per step, over all processes (the global batch; each of N processes takes
            ``batch_size / N``). Each input gives ``aug.n_copies`` views.
        lr: f's learning rate (cosine decay over all epochs).
        optimizer: f's optimiser, ``adamw`` (decoupled weight decay) or ``sgd`` (momentum ``momentum``, L2
            ``weight_decay``: the papers' full-scale recipes).
        momentum: SGD's momentum (``optimizer="sgd"`` only).
        aug_lr: φ's learning rate (Adam).
        aug_lr_schedule: ``constant``, or ``cosine``: decay φ's learning rate to 0 over the joint epochs, so that φ
            settles at the end of training instead of stopping wherever the entropy controller's swings left it.
        aug_lr_warmup_epochs: raise φ's learning rate linearly from 0 over this many joint epochs first (then the
            schedule; the cosine then decays over the remaining joint epochs). The crop recipe of the paper warms
            φ up so that its first, uninformed steps do not push the crop distribution around.
        aug_frozen_epochs: hold φ's learning rate at 0 for this many joint epochs before the warm-up and the
            schedule (the InstaAug reference code's contrastive recipe freezes φ for the first half of training).
        weight_decay: f's weight decay (decoupled for AdamW).
        seed: the run's seed.
        device: where to train (under torchrun a bare ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``).
        progress: show progress bars (None: only when attached to a terminal; never on ranks other than 0).
        checkpoint_every: also checkpoint every this many steps within an epoch (0: at the end of epochs only).
        log_every: steps between the host's reads of the training state: the non-finite check, the progress bar's
            loss and per-step TensorBoard scalars (one device synchronisation each time).
        amp: run the forward passes under autocast with bfloat16 (CPU and GPU); no loss scaling is needed.
        tensorboard: also write TensorBoard event files to ``out_dir/tensorboard`` (needs the tensorboard package):
            ``epoch/METRIC`` per epoch and ``step/METRIC`` every ``log_every`` steps, against the global step.
        find_unused_parameters: passed to f's ``DistributedDataParallel``, for classifiers with parameters that some
            steps do not use (φ's wrapper always looks for them).
        max_grad_norm: clip the gradients of each step to this total norm (0: no clipping).
        channels_last: store f's and φ's convolution weights channels-last (NHWC) during training, and leave them so.
            oneDNN's CPU convolutions run faster on that layout (a 4-stage CNN's step on 48×48 images took 0.63–0.65×
            the time at 1 thread); results differ from the default layout by float rounding only. A model that
            ``view``s its conv features must use ``reshape`` or ``flatten`` instead.
    """

    epochs: int = 10
    pretrain_epochs: int = 0
    batch_size: int = 64
    lr: float = 3e-3
    aug_lr: float = 3e-3
    aug_lr_schedule: str = "constant"
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None
    checkpoint_every: int = 0
    log_every: int = 50
    amp: bool = False
    tensorboard: bool = False
    find_unused_parameters: bool = False
    channels_last: bool = False
    max_grad_norm: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9
    aug_lr_warmup_epochs: int = 0
    aug_frozen_epochs: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.log_every, "log_every")
        for key in ("epochs", "pretrain_epochs", "checkpoint_every", "aug_lr_warmup_epochs", "aug_frozen_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an int ≥ 0, got {value!r}")
        for key in ("lr", "aug_lr", "weight_decay", "max_grad_norm", "momentum"):
            if not (isinstance(getattr(self, key), int | float) and getattr(self, key) >= 0):
                raise ValueError(f"{key} must be a number ≥ 0, got {getattr(self, key)!r}")
        for key in ("amp", "tensorboard", "find_unused_parameters", "channels_last"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"{key} must be a bool, got {getattr(self, key)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.aug_lr_schedule not in AUG_LR_SCHEDULES:
            raise ValueError(f"aug_lr_schedule must be one of {AUG_LR_SCHEDULES}, got {self.aug_lr_schedule!r}")


# ----------------------------------------------------------------------------------------------------------------
# Settings applied to every ``train`` call of a block (the CLI's --resume, --checkpoint-every, --amp, --tensorboard
# reach the experiments' training runs this way, without threading them through every experiment's config).

_OVERRIDES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "instaaug_train_overrides", default=None
)


@contextlib.contextmanager
def train_overrides(**values: Any) -> Iterator[None]:
    """Within this block, every ``train`` call uses these ``TrainConfig`` fields, and ``resume=True`` if given.

    Example: ``with train_overrides(resume=True, checkpoint_every=100): experiment.run(config, out_dir)``.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {"resume"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown training override(s) {unknown}; valid: {sorted(fields)}")
    token = _OVERRIDES.set({**(_OVERRIDES.get() or {}), **values})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def current_train_overrides() -> dict[str, Any]:
    """The ``train_overrides`` in force here (a copy): pass them to worker processes, which do not inherit them."""
    return dict(_OVERRIDES.get() or {})


class TensorBatches:
    """Mini-batches of in-memory tensors (x, y), shuffled with a ``torch.Generator`` each time it is iterated.

    Distributed (``world_size`` > 1): every process draws the same order (seed ``generator`` alike on all ranks),
    cuts it into the same global batches of ``batch_size`` inputs and takes every ``world_size``-th input of each
    from position ``rank`` on, like ``DistributedSampler``. The shards of a global batch together are exactly the
    batch a single process would use; a last, partial batch is padded by wrapping around the order to a multiple
    of ``world_size``, so every rank takes the same number of steps with equal shares.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size (the global batch) must be a multiple of the number of processes, got {batch_size} "
                f"over {world_size} processes"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def permutation(self) -> torch.Tensor:
        """The order (N,) of one epoch: a permutation drawn from ``generator``, or 0 … N-1 without shuffling."""
        n = self.x.shape[0]
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def shard(self, order: torch.Tensor, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches (x (b, C, H, W), y (b,)) of the global batches of ``order`` from batch ``start`` on."""
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world_size > 1:
                pad = -idx.shape[0] % self.world_size
                if pad:
                    idx = torch.cat([idx, order[torch.arange(pad) % order.shape[0]]])
                idx = idx[self.rank :: self.world_size]
            yield self.x[idx], self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.shard(self.permutation())


# ----------------------------------------------------------------------------------------------------------------
# RNG state and checkpoint files


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random states: torch (CPU and the training GPU), Python's ``random`` and NumPy's."""
    version, words, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with matplotlib
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the legacy global state is what user code draws from
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    if state.get("numpy") is not None:
        import numpy as np

        npy = state["numpy"]
        keys = npy["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))  # noqa: NPY002


def _tensors_in(obj: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors_in(v, f"{path}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors_in(v, f"{path}.{i}")


def _digest(state: dict[str, Any]) -> str:
    """SHA-256 over every tensor of ``state`` (name, dtype, shape, bytes): flipped bits in the data are caught too."""
    h = hashlib.sha256()
    for name, t in _tensors_in({k: v for k, v in state.items() if k != "digest"}):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_train_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by ``train``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or corrupted file (unreadable, or its tensors do not match their stored SHA-256),
            naming the file and, when there is one, the previous good checkpoint kept beside it.
    """
    path = Path(path)
    previous = path.with_name(PREVIOUS_CHECKPOINT_FILE)
    hint = (
        f" The previous checkpoint is kept at {previous}; to resume from it, move it to {path}."
        if previous.is_file() and previous != path
        else ""
    )
    try:
        state = load_checkpoint(path, device)
    except ValueError as e:
        raise ValueError(f"cannot resume: {e}{hint}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"cannot resume: {path} is not a training checkpoint (no model or epoch in it).{hint}")
    if "digest" in state and state["digest"] != _digest(state):
        raise ValueError(
            f"cannot resume: {path} is corrupted: its tensors do not match the SHA-256 stored with them.{hint}"
        )
    if state.get("version", 1) > _CHECKPOINT_VERSION:
        raise ValueError(f"cannot resume: {path} has checkpoint version {state['version']}, newer than this instaaug")
    return state


def _write_checkpoint(out_path: Path, state: dict[str, Any], keep_previous: bool) -> None:
    """Atomically replace the checkpoint; the one it replaces (known good) first becomes the previous one."""
    current = out_path / CHECKPOINT_FILE
    state["digest"] = _digest(state)
    if keep_previous and current.is_file():
        previous = out_path / PREVIOUS_CHECKPOINT_FILE
        tmp = previous.with_name(f".{previous.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(current, tmp)  # a second name for the same bytes; the latest file never goes missing
            os.replace(tmp, previous)
        except OSError:  # file systems without hard links
            atomic_write_bytes(previous, current.read_bytes())
    save_checkpoint(current, state)


def _load_for_resume(out_path: Path) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint (None if there is none) and sends it to every rank; errors reach every rank."""
    payload: tuple[str, Any] = ("none", None)
    if distributed.is_main_process():
        path = out_path / CHECKPOINT_FILE
        previous = out_path / PREVIOUS_CHECKPOINT_FILE
        if not path.is_file() and previous.is_file():
            # Only possible if a run was killed between keeping the previous checkpoint and writing the new one
            # on a file system without hard links.
            warnings.warn(f"{path} is missing; resuming from the previous checkpoint {previous}", stacklevel=3)
            path = previous
        if path.is_file():
            try:
                payload = ("ok", read_train_checkpoint(path))
            except ValueError as e:
                payload = ("error", str(e))
    kind, value = distributed.broadcast_object(payload)
    if kind == "error":
        raise ValueError(value)
    return value


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    differ = {k: (saved[k], getattr(config, k)) for k in _RESULT_KEYS if k in saved and saved[k] != getattr(config, k)}
    if differ:
        details = ", ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in differ.items())
        raise ValueError(f"cannot resume from {path}: it was written by a run with other settings ({details})")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _resumed_sums(
    accum: list[dict[str, Any]], rank: int, world: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """This rank's running sums of a resumed epoch: its own with the same world size; otherwise rank 0 takes the
    saved ranks' total and the others start at zero (the epoch's all-reduce adds them up the same)."""
    if len(accum) == world:
        mine = accum[rank]
        return {k: v.to(device) for k, v in mine["sums"].items()}, mine["correct"].to(device), int(mine["views"])
    sums = {k: sum(a["sums"][k] for a in accum).to(device) for k in accum[0]["sums"]}
    correct = sum(a["correct"] for a in accum).to(device)
    views = sum(int(a["views"]) for a in accum)
    if rank == 0:
        return sums, correct, views
    return {k: torch.zeros_like(v) for k, v in sums.items()}, torch.zeros_like(correct), 0


# ----------------------------------------------------------------------------------------------------------------


def _open_tensorboard(out_path: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "TrainConfig.tensorboard is on but the tensorboard package is not installed (pip install tensorboard); "
            "metrics go to metrics.jsonl only",
            stacklevel=3,
        )
        return None
    return SummaryWriter(str(out_path / TENSORBOARD_DIR), purge_step=purge_step)


def _raise_if_nonfinite(bad: torch.Tensor, epoch: int, epoch_start: int, where: str) -> None:
    """One host read of the first non-finite step (-1: none), agreed by all ranks; raise naming it."""
    first = int(distributed.all_reduce_max(bad))
    if first >= 0:
        raise FloatingPointError(
            f"non-finite values (NaN/Inf) in the loss or in φ's output at step {first} (epoch {epoch + 1}, step "
            f"{first - epoch_start} of the epoch), found {where}; training stopped and no checkpoint was written "
            "after it (the last checkpoint, if any, holds the weights from before). Lower the learning rates, "
            "check the data, or try amp=False."
        )


def _warmup_factor(step: int, warmup: int, total: int, cosine: bool, frozen: int = 0) -> float:
    """φ's learning-rate factor at joint step ``step``: 0 for the first ``frozen`` steps, then linear from 1/warmup
    to 1 over ``warmup`` steps, then 1 (constant) or a cosine decay to 0 at ``total``."""
    if step < frozen:
        return 0.0
    step, total = step - frozen, total - frozen
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def check_regression_targets(y: Any, batch: int) -> None:
    """Validate real regression targets: a float tensor (B,) or (B, D) of finite values."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"regression targets must be a float torch.Tensor, got {type(y).__name__}")
    if y.dim() not in (1, 2) or y.shape[0] != batch:
        raise ValueError(f"regression targets must have shape ({batch},) or ({batch}, D), got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("regression targets must be finite (found NaN or Inf)")


def to_channels_last(*modules: nn.Module) -> None:
    """Store every module's 4-D weights (convolutions) channels-last (NHWC), in place, as
    ``TrainConfig(channels_last=True)`` does."""
    for module in modules:
        if not isinstance(module, nn.Module):
            raise TypeError(f"to_channels_last takes torch modules, got {type(module).__name__}")
        module.to(memory_format=torch.channels_last)


def train(
    model: nn.Module,
    aug: Augmenter,
    objective: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    evaluate_fn: Callable[[int], dict[str, float]] | None = None,
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Train f (``model``) and φ (``aug``) with ``objective``; returns one metrics dict per epoch.

    Args:
        model: maps images (N, C, H, W) to logits (N, K). Freeze it (``requires_grad_(False)``) to train φ alone
            against a fixed classifier; it then stays in eval mode (BatchNorm statistics unchanged).
        aug: the augmenter producing the views (``InstaAug``, ``RandomAugment``, ``NoAugment``, ...).
        objective: ``InstaAugObjective``, ``AugerinoObjective`` or ``TaskObjective``.
        data: training tensors (x (N, C, H, W) in [0, 1], y (N,) integer labels, or y (N, 1, H, W) integer masks
            for segmentation) or a re-iterable of batches.
            Tensors are sharded over the processes when distributed; an iterable must be sharded by its owner (e.g.
            a DataLoader with a ``DistributedSampler``, whose ``set_epoch`` is called every epoch) and give every
            rank the same number of equal-sized batches. A mid-epoch resume replays an iterable's first batches
            (skipping them), so its order must depend only on torch's global RNG, which is seeded per epoch.
        config: a ``TrainConfig``.
        out_dir: where to write ``metrics.jsonl``, ``checkpoint.safetensors`` (and the previous checkpoint
            ``checkpoint.prev.safetensors``) and TensorBoard files (nothing written if None; rank 0 only).
        resume: continue from ``out_dir``'s checkpoint if there is one (also mid-epoch). A truncated or corrupted
            checkpoint raises a ValueError and is left as it is.
        evaluate_fn: called after each epoch with its index; its metrics join that epoch's line (use training
            or validation data there, never the test set, if they steer anything).
        task_loss: per-view loss ``(logits (N, K), y (N,)) → (N,)``; cross-entropy by default. With masks
            (segmentation) the model's outputs are dense (N, K, H, W), the masks go through the same sampled
            transforms as the images (``aug(x, targets=...)``), ``task_loss`` gets ``(logits, out.targets)`` (the
            masks themselves in pre-training epochs) and defaults to ``segmentation_loss``; the reported accuracy
            is then the pixel accuracy.

    Raises:
        FloatingPointError: a NaN/Inf in the loss or in φ's output (see the module's docstring).
        ValueError: bad data, a checkpoint that cannot be resumed from, or a batch size that does not split evenly
            over the processes.
    """
    config = config or TrainConfig()
    overrides = dict(_OVERRIDES.get() or {})
    resume = bool(overrides.pop("resume", resume))
    if overrides:
        config = dataclasses.replace(config, **overrides)
    device = distributed.local_device(config.device)
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    if isinstance(data, tuple):
        x, y = data
        check_images(x, name="training images")
        if isinstance(y, torch.Tensor) and y.dim() == 4:
            Targets(masks=y).check(x.shape[0], (x.shape[-2], x.shape[-1]))
        elif isinstance(y, torch.Tensor) and y.is_floating_point():
            check_regression_targets(y, x.shape[0])
        else:
            check_labels(y, x.shape[0])
        batches: Iterable = TensorBatches(x, y, config.batch_size, rank=rank, world_size=world)
        # Validated once here, so the steps skip the per-batch value checks (host synchronisations).
        checks = trusted_inputs
    else:
        batches = data
        checks = contextlib.nullcontext
    model.to(device)
    aug.to(device)
    objective.to(device)
    if config.channels_last:
        to_channels_last(model, aug)
    total_epochs = config.pretrain_epochs + config.epochs
    optimisers = make_optimisers(
        model, aug, config.lr, config.aug_lr, config.weight_decay, config.optimizer, config.momentum
    )
    if config.pretrain_epochs and "f" not in optimisers:
        raise ValueError("pretrain_epochs > 0 trains the classifier alone, but it has no trainable parameters")
    steps_per_epoch = len(batches) if hasattr(batches, "__len__") else None
    scheduler = None
    if "f" in optimisers and steps_per_epoch:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimisers["f"], T_max=max(1, total_epochs * steps_per_epoch)
        )
    aug_scheduler = None
    joint_steps = config.epochs * (steps_per_epoch or 0)
    if "phi" in optimisers and steps_per_epoch and (config.aug_lr_warmup_epochs or config.aug_frozen_epochs):
        frozen = min(config.aug_frozen_epochs * steps_per_epoch, joint_steps)
        warmup = min(config.aug_lr_warmup_epochs * steps_per_epoch, joint_steps - frozen)
        cosine = config.aug_lr_schedule == "cosine"
        aug_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimisers["phi"], lambda step: _warmup_factor(step, warmup, joint_steps, cosine, frozen)
        )
    elif "phi" in optimisers and steps_per_epoch and config.aug_lr_schedule == "cosine":
        aug_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimisers["phi"], T_max=max(1, joint_steps))
    # The modules called in the steps: DDP wrappers when distributed (they average the gradients over the ranks
    # during backward); states are saved from the plain modules, so checkpoints do not depend on the world size.
    f_call: nn.Module = model
    aug_call: nn.Module = aug
    if distributed.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        if "f" in optimisers:
            f_call = DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=config.find_unused_parameters
            )
        if "phi" in optimisers:
            # φ may hold parameters a step does not use (e.g. the LRP crop network's unused levels); finding them
            # walks φ's own small graph only.
            aug_call = DistributedDataParallel(aug, device_ids=ids, find_unused_parameters=True)

    out_path = Path(out_dir) if out_dir is not None else None
    writes = out_path is not None and main
    history: list[dict[str, Any]] = []
    start_epoch, start_step, global_step = 0, 0, 0
    saved: dict[str, Any] | None = None
    keep_previous = False  # rotate the current checkpoint to the previous one only once it is known to be good
    state = _load_for_resume(out_path) if resume and out_path is not None else None
    if state is not None:
        assert out_path is not None
        _check_same_run(state.get("config", {}), config, out_path / CHECKPOINT_FILE)
        model.load_state_dict(state["model"])
        aug.load_state_dict(state["aug"])
        objective.load_state_dict(state["objective"])
        for name, opt in optimisers.items():
            opt.load_state_dict(state["optimisers"][name])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if aug_scheduler is not None:
            aug_scheduler.load_state_dict(state["aug_scheduler"])
        history = state["history"]
        if state.get("complete", True):
            start_epoch = state["epoch"] + 1
        else:
            start_epoch, start_step, saved = state["epoch"], state["step"], state
        global_step = state.get("global_step", start_epoch * (steps_per_epoch or 0) + start_step)
        rngs = state.get("rng") or []
        if len(rngs) == world:
            _set_rng_state(rngs[rank], device)
            resume_rng: dict[str, Any] | int = rngs[rank]
        else:
            if start_step:
                warnings.warn(
                    f"the checkpoint was written by {len(rngs)} process(es), this run has {world}: the data order "
                    "is kept but the augmentation samples of the rest of this epoch are drawn afresh",
                    stacklevel=2,
                )
            resume_rng = (epoch_seed(config.seed, start_epoch, rank) ^ (start_step * 0x2545F4914F6CDD1D)) % 2**63
        keep_previous = True
        if writes:
            # The metrics file may hold lines written after this checkpoint: rewrite it from the checkpoint.
            atomic_write_bytes(out_path / METRICS_FILE, "".join(_json_line(r) for r in history).encode())
    elif writes:
        assert out_path is not None
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / METRICS_FILE).unlink(missing_ok=True)
        (out_path / PREVIOUS_CHECKPOINT_FILE).unlink(missing_ok=True)  # from another run
    writer = _open_tensorboard(out_path, global_step or None) if writes and config.tensorboard else None

    def checkpoint(epoch: int, step: int, complete: bool, accum: dict[str, Any] | None) -> None:
        """Write the state after ``step`` steps of ``epoch``; ``accum``: this rank's running sums of the epoch."""
        nonlocal keep_previous
        # Every rank's RNG state and (mid-epoch) metric sums: a collective, every rank takes part.
        gathered = distributed.gather_objects((_rng_state(device), _to_cpu(accum)))
        if not writes:
            return
        assert out_path is not None
        ckpt = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "aug": aug.state_dict(),
            "objective": objective.state_dict(),
            "optimisers": {name: opt.state_dict() for name, opt in optimisers.items()},
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "aug_scheduler": aug_scheduler.state_dict() if aug_scheduler is not None else None,
            "history": history,
            "epoch": epoch,
            "step": step,
            "complete": complete,
            "global_step": global_step,
            "world_size": world,
            "rng": [r for r, _ in gathered],
            "accum": [a for _, a in gathered] if accum is not None else None,
            "order": order_of_epoch,
            "config": asdict(config),
        }
        _write_checkpoint(out_path, ckpt, keep_previous)
        keep_previous = True

    order_of_epoch: torch.Tensor | None = None  # the data order saved with a mid-epoch checkpoint
    # The first step (global numbering, from 1) whose loss or φ output was non-finite; -1 while there is none.
    bad = torch.full((), -1, dtype=torch.long, device=device)
    try:
        score_name = "train_accuracy"  # train_mae for regression targets, set by the steps
        for epoch in range(start_epoch, total_epochs):
            pretraining = epoch < config.pretrain_epochs
            mid = saved is not None and epoch == start_epoch
            first_step = start_step if mid else 0
            epoch_start = global_step - first_step
            torch.manual_seed(epoch_seed(config.seed, epoch, rank))
            order: torch.Tensor | None = None
            if isinstance(batches, TensorBatches):
                if mid:
                    order = saved["order"].cpu()  # type: ignore[index]
                else:
                    batches.generator.manual_seed(epoch_seed(config.seed, epoch))
                    order = batches.permutation()
                iterator: Iterator = batches.shard(order, first_step)
            else:
                set_epoch = getattr(getattr(batches, "sampler", None), "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(epoch)
                iterator = iter(batches)
                # Replay (and drop) the batches done before a mid-epoch checkpoint now, before the RNG state is
                # restored, so the iterable draws from the global RNG exactly as it did in the interrupted run.
                for _ in itertools.islice(iterator, first_step):
                    pass
            if mid:
                assert saved is not None
                sums, correct, views = _resumed_sums(saved["accum"], rank, world, device)
                if isinstance(resume_rng, dict):
                    _set_rng_state(resume_rng, device)
                else:
                    torch.manual_seed(resume_rng)
            else:
                sums, correct, views = {}, torch.zeros((), device=device), 0
            # A frozen classifier stays in eval mode: its BatchNorm statistics are part of what is fixed.
            model.train("f" in optimisers)
            aug.train()
            objective.train()
            started = time.perf_counter()
            bar = tqdm(
                iterator,
                desc=f"epoch {epoch + 1}/{total_epochs}" + (" (pre-train)" if pretraining else ""),
                total=steps_per_epoch,
                initial=first_step,
                disable=(None if config.progress is None else not config.progress) if main else True,
                leave=False,
            )
            step = first_step
            for xb, yb in bar:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                result = train_step(
                    f_call,
                    aug_call,
                    objective,
                    optimisers,
                    xb,
                    yb,
                    task_loss=task_loss,
                    pretraining=pretraining,
                    amp=config.amp,
                    max_grad_norm=config.max_grad_norm,
                    checks=checks,
                )
                if not pretraining and aug_scheduler is not None:
                    aug_scheduler.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                global_step += 1
                # Stays on the device: a Python int is a kernel argument here, not a transfer.
                bad = torch.where(~result.finite & (bad < 0), global_step, bad)
                metrics = result.metrics
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0) + value.float() * result.views
                correct += result.correct
                views += result.views
                score_name = f"train_{result.metric}"
                if global_step % config.log_every == 0:
                    _raise_if_nonfinite(bad, epoch, epoch_start, f"at the log interval of step {global_step}")
                    if writer is not None or not bar.disable:
                        values = dict(zip(metrics, torch.stack(list(metrics.values())).float().tolist(), strict=True))
                        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                        if writer is not None:
                            for key, value in values.items():
                                writer.add_scalar(f"step/{key}", value, global_step)
                if (
                    out_path is not None
                    and config.checkpoint_every
                    and global_step % config.checkpoint_every == 0
                    and (steps_per_epoch is None or step < steps_per_epoch)
                ):
                    _raise_if_nonfinite(bad, epoch, epoch_start, "before a checkpoint")
                    order_of_epoch = order
                    checkpoint(epoch, step, False, {"sums": sums, "correct": correct, "views": views})
            bar.close()
            _raise_if_nonfinite(bad, epoch, epoch_start, "at the end of the epoch")
            # DDP keeps rank 0's buffers (BatchNorm statistics) at the start of each forward; after the last
            # one every rank has updated its own. Share rank 0's, so every rank evaluates the same model.
            distributed.broadcast_buffers(model)
            distributed.broadcast_buffers(aug)
            if views == 0:
                raise ValueError(f"epoch {epoch + 1} had no training batches")
            if distributed.is_distributed():
                # Every rank's share of the epoch, so each rank's record describes the whole data.
                totals = torch.stack([*(v.double() for v in sums.values()), correct.double()])
                totals = torch.cat([totals, torch.tensor([float(views)], dtype=torch.float64, device=device)])
                totals = distributed.all_reduce_sum(totals).tolist()
                sums = dict(zip(sums, totals[: len(sums)], strict=True))
                correct_value, views = totals[-2], int(totals[-1])
            else:
                correct_value = float(correct)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": "pretrain" if pretraining else "joint",
                **{key: float(value) / views for key, value in sums.items()},
                score_name: correct_value / views,
                "seconds": time.perf_counter() - started,
            }
            if not math.isfinite(record["task_loss"]):
                raise FloatingPointError(f"the training loss became non-finite in epoch {epoch + 1}")
            if evaluate_fn is not None:
                record.update(evaluate_fn(epoch))
            history.append(record)
            if writes:
                assert out_path is not None
                with open(out_path / METRICS_FILE, "a") as f:
                    f.write(_json_line(record))
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, int | float) and not isinstance(value, bool) and key != "epoch":
                            writer.add_scalar(f"epoch/{key}", value, global_step)
                    writer.flush()
            if out_path is not None:
                order_of_epoch = None
                checkpoint(epoch, step, True, None)
    finally:
        if writer is not None:
            writer.close()
    return history


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> torch.Tensor:
    """Logits (N, K) of ``model`` for images x (N, C, H, W), in batches, in eval mode.

    ``progress``: show a progress bar (None: only when attached to a terminal, and on rank 0).
    """
    was_training = model.training
    model.eval()
    chunks = x.split(batch_size)
    disable = (None if progress is None else not progress) if distributed.is_main_process() else True
    try:
        return torch.cat(
            [model(xb.to(device)).cpu() for xb in tqdm(chunks, desc="predict", disable=disable, leave=False)]
        )
    finally:
        model.train(was_training)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of rows of logits (N, K) whose argmax equals y (N,)."""
    return float((logits.argmax(-1) == y).float().mean())
