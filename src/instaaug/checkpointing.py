"""Training checkpoints: atomic, digest-checked files that a run resumes from bit-identically, mid-epoch included.

A checkpoint holds the states of f, φ, the objective, the optimisers and schedulers, the history of epoch records,
every rank's RNG state and (mid-epoch) running metric sums, and the epoch's data order. Its tensors carry a SHA-256,
so a truncated or bit-flipped file is refused with a message rather than resumed from. The checkpoint before the
latest is kept beside it (``checkpoint.prev.safetensors``) until the new one is known good.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .io import atomic_write_bytes, load_checkpoint, save_checkpoint

CHECKPOINT_FILE = "checkpoint.safetensors"
#: The checkpoint before the latest one, kept so that a damaged latest file never leaves a run without a good one.
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.safetensors"
CHECKPOINT_FORMAT = "instaaug.train"
CHECKPOINT_VERSION = 2
#: Settings that change a run's result: resuming with other values would silently mix two runs.
RESULT_KEYS = (
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


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random states: torch (CPU and the training GPU), Python's ``random`` and NumPy's."""
    version, words, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the legacy global state is what user code draws from
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore the random states saved by ``rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    if state.get("numpy") is not None:
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


def digest(state: dict[str, Any]) -> str:
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
    if "digest" in state and state["digest"] != digest(state):
        raise ValueError(
            f"cannot resume: {path} is corrupted: its tensors do not match the SHA-256 stored with them.{hint}"
        )
    if state.get("version", 1) > CHECKPOINT_VERSION:
        raise ValueError(f"cannot resume: {path} has checkpoint version {state['version']}, newer than this instaaug")
    return state


def write_checkpoint(out_path: Path, state: dict[str, Any], keep_previous: bool) -> None:
    """Atomically replace the checkpoint; the one it replaces (known good) first becomes the previous one."""
    current = out_path / CHECKPOINT_FILE
    state["digest"] = digest(state)
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


def load_for_resume(out_path: Path) -> dict[str, Any] | None:
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


def check_same_run(saved: dict[str, Any], config: Any, path: Path) -> None:
    """Refuse to resume under settings (``RESULT_KEYS`` of the ``TrainConfig``) other than the checkpoint's."""
    differ = {k: (saved[k], getattr(config, k)) for k in RESULT_KEYS if k in saved and saved[k] != getattr(config, k)}
    if differ:
        details = ", ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in differ.items())
        raise ValueError(f"cannot resume from {path}: it was written by a run with other settings ({details})")


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (also inside dicts) detached and moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    return obj


class Checkpointer:
    """Writes a run's checkpoints to ``out_path`` (rank 0 only; every rank takes part in gathering the states).

    Args:
        out_path: the run's directory (None: nothing is written, and ``save`` does nothing).
        states: the stateful objects by name (``model``, ``aug``, ``objective``; ``optimisers`` a dict of
            optimisers; ``scheduler`` and ``aug_scheduler`` may be None), saved by their ``state_dict()``.
        config: the run's ``TrainConfig``, saved so that a resume under other settings is refused.
        device: the training device (its RNG state is saved).
        keep_previous: rotate the current file to the previous one before the first write (True once the
            current file is known good, e.g. after a resume from it).
    """

    def __init__(
        self,
        out_path: Path | None,
        states: dict[str, Any],
        config: Any,
        device: torch.device,
        keep_previous: bool = False,
    ) -> None:
        self.out_path, self.states, self.config, self.device = out_path, states, config, device
        self.keep_previous = keep_previous

    @property
    def enabled(self) -> bool:
        return self.out_path is not None

    def restore(self, state: dict[str, Any]) -> None:
        """Load the saved states into the objects (every rank)."""
        for name, obj in self.states.items():
            if name == "optimisers":
                for key, opt in obj.items():
                    opt.load_state_dict(state["optimisers"][key])
            elif obj is not None:
                obj.load_state_dict(state[name])

    def save(
        self,
        epoch: int,
        step: int,
        global_step: int,
        history: list[dict[str, Any]],
        accum: dict[str, Any] | None = None,
        order: torch.Tensor | None = None,
    ) -> None:
        """Write the state after ``step`` steps of ``epoch`` (``global_step`` in all). Mid-epoch, ``accum`` holds
        this rank's running sums of the epoch and ``order`` the epoch's data order; without ``accum`` the epoch is
        complete."""
        if self.out_path is None:
            return
        # Every rank's RNG state and metric sums: a collective, every rank takes part.
        gathered = distributed.gather_objects((rng_state(self.device), to_cpu(accum)))
        if not distributed.is_main_process():
            return
        ckpt: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for name, obj in self.states.items():
            if name == "optimisers":
                ckpt[name] = {key: opt.state_dict() for key, opt in obj.items()}
            else:
                ckpt[name] = obj.state_dict() if obj is not None else None
        ckpt.update(
            history=history,
            epoch=epoch,
            step=step,
            complete=accum is None,
            global_step=global_step,
            world_size=distributed.world_size(),
            rng=[r for r, _ in gathered],
            accum=[a for _, a in gathered] if accum is not None else None,
            order=order,
            config=asdict(self.config),
        )
        write_checkpoint(self.out_path, ckpt, self.keep_previous)
        self.keep_previous = True
