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
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .augment import Augmenter
from .batching import TensorBatches, epoch_batches
from .checkpointing import (
    CHECKPOINT_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    Checkpointer,
    check_same_run,
    load_for_resume,
    read_train_checkpoint,
    set_rng_state,
)
from .schedules import AUG_LR_SCHEDULES, make_schedulers
from .seeding import epoch_seed
from .step import OPTIMIZERS, make_optimisers, train_step
from .targets import Targets
from .train_log import METRICS_FILE, TENSORBOARD_DIR, EpochMeter, MetricsLog, NonFiniteFlag
from .validation import check_images, check_int_fields, check_labels, check_positive_int, trusted_inputs

__all__ = [  # what other modules and users import from here; the checkpoint and log names live beside their code
    "CHANNELS_LAST_UNSAFE_MAX_CHANNELS",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "PREVIOUS_CHECKPOINT_FILE",
    "TENSORBOARD_DIR",
    "TensorBatches",
    "TrainConfig",
    "accuracy",
    "channels_last_hazards",
    "check_regression_targets",
    "current_train_overrides",
    "predict",
    "read_train_checkpoint",
    "to_channels_last",
    "train",
    "train_overrides",
]


@dataclass(frozen=True)
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
            ``view``s its conv features must use ``reshape`` or ``flatten`` instead. Off by default: torch 2.13's CPU
            channels-last backward of strided 1×1 convolutions with ≤ 8 input channels corrupts memory for odd
            batches, so ``train`` refuses such models with a ValueError (``channels_last_hazards``), and a library
            default must not depend on which layers a user's model has. The experiments whose models are known
            to be safe turn it on (crop, segment, contrastive).
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
        check_int_fields(
            self,
            ("epochs", "pretrain_epochs", "checkpoint_every", "aug_lr_warmup_epochs", "aug_frozen_epochs"),
            least=0,
        )
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


def check_regression_targets(y: Any, batch: int) -> None:
    """Validate real regression targets: a float tensor (B,) or (B, D) of finite values."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"regression targets must be a float torch.Tensor, got {type(y).__name__}")
    if y.dim() not in (1, 2) or y.shape[0] != batch:
        raise ValueError(f"regression targets must have shape ({batch},) or ({batch}, D), got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("regression targets must be finite (found NaN or Inf)")


#: The most input channels of a strided 1×1 convolution that ``to_channels_last`` refuses on the CPU: torch 2.13's
#: CPU backward of such a convolution in channels-last corrupts the heap (an abort or segfault) for some odd batches
#: (reproduced with ``nn.Conv2d(4, 8, 1, stride=2)`` at batch 3 of 16 × 16 inputs, and with 8 input channels at
#: batch 5; 9 or more input channels, stride 1 and 3 × 3 kernels were fine).
CHANNELS_LAST_UNSAFE_MAX_CHANNELS = 8


def channels_last_hazards(module: nn.Module) -> list[str]:
    """The convolutions of ``module`` on the CPU that torch's channels-last kernels get wrong: strided 1×1
    ``Conv2d`` layers with at most ``CHANNELS_LAST_UNSAFE_MAX_CHANNELS`` input channels, as ``"name (…)"`` strings."""
    hazards = []
    for name, layer in module.named_modules():
        if (
            isinstance(layer, nn.Conv2d)
            and layer.weight.device.type == "cpu"
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.stride) != (1, 1)
            and layer.in_channels <= CHANNELS_LAST_UNSAFE_MAX_CHANNELS
        ):
            hazards.append(
                f"{name or type(module).__name__} (1×1 stride-{layer.stride[0]} Conv2d, {layer.in_channels} in)"
            )
    return hazards


def to_channels_last(*modules: nn.Module) -> None:
    """Store every module's 4-D weights (convolutions) channels-last (NHWC), in place, as
    ``TrainConfig(channels_last=True)`` does.

    Raises:
        TypeError: a module that is not an ``nn.Module``.
        ValueError: a module with a layer that torch's CPU channels-last kernels corrupt memory on (see
            ``channels_last_hazards``); nothing is converted then.
    """
    for module in modules:
        if not isinstance(module, nn.Module):
            raise TypeError(f"to_channels_last takes torch modules, got {type(module).__name__}")
    hazards = [h for module in modules for h in channels_last_hazards(module)]
    if hazards:
        raise ValueError(
            f"channels_last cannot be used with {', '.join(hazards)} on the CPU: torch's channels-last backward of "
            "a strided 1×1 convolution with so few input channels corrupts memory; keep the default layout"
        )
    for module in modules:
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
    config, resume = _with_overrides(config or TrainConfig(), resume)
    device = distributed.local_device(config.device)
    rank = distributed.rank()
    batches, checks = _batches_of(data, config, rank, distributed.world_size())
    for module in (model, aug, objective):
        module.to(device)
    if config.channels_last:
        to_channels_last(model, aug)
    optimisers = make_optimisers(
        model, aug, config.lr, config.aug_lr, config.weight_decay, config.optimizer, config.momentum
    )
    if config.pretrain_epochs and "f" not in optimisers:
        raise ValueError("pretrain_epochs > 0 trains the classifier alone, but it has no trainable parameters")
    steps_per_epoch = len(batches) if hasattr(batches, "__len__") else None
    scheduler, aug_scheduler = make_schedulers(optimisers, config, steps_per_epoch)
    f_call, aug_call = _parallel(model, aug, optimisers, device, config)
    out_path = Path(out_dir) if out_dir is not None else None
    states = {"model": model, "aug": aug, "objective": objective, "optimisers": optimisers}
    states.update(scheduler=scheduler, aug_scheduler=aug_scheduler)  # the checkpoint's order of keys
    checkpointer = Checkpointer(out_path, states, config, device)
    start = _Start.of(checkpointer, config, steps_per_epoch, resume)
    history, global_step = start.history, start.global_step
    stale = [out_path / PREVIOUS_CHECKPOINT_FILE] if out_path is not None else []  # from another run
    log = MetricsLog(
        out_path, config.tensorboard, history if start.state is not None else None, global_step or None, stale
    )
    nonfinite = NonFiniteFlag(device)
    total_epochs = config.pretrain_epochs + config.epochs
    try:
        for epoch in range(start.epoch, total_epochs):
            pretraining = epoch < config.pretrain_epochs
            mid = start.mid_epoch is not None and epoch == start.epoch
            first_step = start.step if mid else 0
            epoch_start = global_step - first_step
            torch.manual_seed(epoch_seed(config.seed, epoch, rank))
            iterator, order = epoch_batches(batches, config.seed, epoch, first_step, start.order if mid else None)
            meter = start.resumed_meter(rank, device) if mid else EpochMeter(device)
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
                disable=(None if config.progress is None else not config.progress) if rank == 0 else True,
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
                nonfinite.update(result.finite, global_step)
                meter.add(result)
                if global_step % config.log_every == 0:
                    nonfinite.check(epoch, epoch_start, f"at the log interval of step {global_step}")
                    if log.writer is not None or not bar.disable:
                        metrics = result.metrics
                        values = dict(zip(metrics, torch.stack(list(metrics.values())).float().tolist(), strict=True))
                        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                        log.step(values, global_step)
                if (
                    checkpointer.enabled
                    and config.checkpoint_every
                    and global_step % config.checkpoint_every == 0
                    and (steps_per_epoch is None or step < steps_per_epoch)
                ):
                    nonfinite.check(epoch, epoch_start, "before a checkpoint")
                    checkpointer.save(epoch, step, global_step, history, accum=meter.state(), order=order)
            bar.close()
            nonfinite.check(epoch, epoch_start, "at the end of the epoch")
            # DDP keeps rank 0's buffers (BatchNorm statistics) at the start of each forward; after the last
            # one every rank has updated its own. Share rank 0's, so every rank evaluates the same model.
            distributed.broadcast_buffers(model)
            distributed.broadcast_buffers(aug)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": "pretrain" if pretraining else "joint",
                **meter.record(epoch),
                "seconds": time.perf_counter() - started,
            }
            if evaluate_fn is not None:
                record.update(evaluate_fn(epoch))
            history.append(record)
            log.epoch(record, global_step)
            checkpointer.save(epoch, step, global_step, history)
    finally:
        log.close()
    return history


def _with_overrides(config: TrainConfig, resume: bool) -> tuple[TrainConfig, bool]:
    """The config and ``resume`` with the ``train_overrides`` in force applied."""
    overrides = dict(_OVERRIDES.get() or {})
    resume = bool(overrides.pop("resume", resume))
    return (dataclasses.replace(config, **overrides) if overrides else config), resume


def _batches_of(
    data: tuple[torch.Tensor, torch.Tensor] | Iterable, config: TrainConfig, rank: int, world: int
) -> tuple[Iterable, Callable[[], contextlib.AbstractContextManager]]:
    """The batches of ``data`` and the value-check context of the steps: tensors are validated once here, so the
    steps skip the per-batch checks (host synchronisations); an iterable's batches are checked as they come."""
    if not isinstance(data, tuple):
        return data, contextlib.nullcontext
    x, y = data
    check_images(x, name="training images")
    if isinstance(y, torch.Tensor) and y.dim() == 4:
        Targets(masks=y).check(x.shape[0], (x.shape[-2], x.shape[-1]))
    elif isinstance(y, torch.Tensor) and y.is_floating_point():
        check_regression_targets(y, x.shape[0])
    else:
        check_labels(y, x.shape[0])
    return TensorBatches(x, y, config.batch_size, rank=rank, world_size=world), trusted_inputs


def _parallel(
    model: nn.Module, aug: nn.Module, optimisers: dict[str, Any], device: torch.device, config: TrainConfig
) -> tuple[nn.Module, nn.Module]:
    """The modules the steps call: DDP wrappers when distributed (they average the gradients over the ranks during
    backward); states are saved from the plain modules, so checkpoints do not depend on the world size."""
    if not distributed.is_distributed():
        return model, aug
    ids = [device.index] if device.type == "cuda" else None
    f_call: nn.Module = model
    aug_call: nn.Module = aug
    if "f" in optimisers:
        f_call = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=config.find_unused_parameters)
    if "phi" in optimisers:
        # φ may hold parameters a step does not use (e.g. the LRP crop network's unused levels); finding them walks
        # φ's own small graph only.
        aug_call = DistributedDataParallel(aug, device_ids=ids, find_unused_parameters=True)
    return f_call, aug_call


@dataclass
class _Start:
    """Where a run starts: from scratch, or from its checkpoint (after a complete epoch or mid-epoch)."""

    seed: int
    state: dict[str, Any] | None = None
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mid_epoch: dict[str, Any] | None = None  # the checkpoint, when it was written mid-epoch

    @classmethod
    def of(cls, checkpointer: Checkpointer, config: TrainConfig, steps_per_epoch: int | None, resume: bool) -> _Start:
        """Read the checkpoint when resuming (every rank), restore the states from it and say where to go on."""
        out_path = checkpointer.out_path
        state = load_for_resume(out_path) if resume and out_path is not None else None
        if state is None:
            return cls(seed=config.seed)
        assert out_path is not None
        check_same_run(state.get("config", {}), config, out_path / CHECKPOINT_FILE)
        checkpointer.restore(state)
        checkpointer.keep_previous = True  # the file just read is good
        start = cls(seed=config.seed, state=state, history=state["history"])
        if state.get("complete", True):
            start.epoch = state["epoch"] + 1
        else:
            start.epoch, start.step, start.mid_epoch = state["epoch"], state["step"], state
        start.global_step = state.get("global_step", start.epoch * (steps_per_epoch or 0) + start.step)
        return start

    @property
    def order(self) -> torch.Tensor | None:
        """The data order of the interrupted epoch (in-memory tensors only)."""
        order = self.mid_epoch.get("order") if self.mid_epoch is not None else None
        return order.cpu() if order is not None else None

    def resumed_meter(self, rank: int, device: torch.device) -> EpochMeter:
        """The metric sums of the interrupted epoch, then this rank's saved random state: the rest of the epoch
        continues as it would have. With another number of processes the data order is kept but the rest of the
        epoch's augmentation samples are drawn afresh."""
        assert self.mid_epoch is not None
        world = distributed.world_size()
        meter = EpochMeter.resumed(self.mid_epoch["accum"], rank, world, device)
        rngs = self.mid_epoch.get("rng") or []
        if len(rngs) == world:
            set_rng_state(rngs[rank], device)
            return meter
        warnings.warn(
            f"the checkpoint was written by {len(rngs)} process(es), this run has {world}: the data order is kept "
            "but the augmentation samples of the rest of this epoch are drawn afresh",
            stacklevel=3,
        )
        torch.manual_seed((epoch_seed(self.seed, self.epoch, rank) ^ (self.step * 0x2545F4914F6CDD1D)) % 2**63)
        return meter


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
