"""What ``train`` logs: the running sums of an epoch's metrics (on the device, read once per epoch), the JSON lines
of ``metrics.jsonl``, optional TensorBoard scalars, and the non-finite flag read every ``log_every`` steps."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .io import atomic_write_bytes
from .step import StepOutput

METRICS_FILE = "metrics.jsonl"
#: TensorBoard event files go to ``out_dir/tensorboard`` (with ``TrainConfig.tensorboard``).
TENSORBOARD_DIR = "tensorboard"


def _open_tensorboard(path: Path, purge_step: int | None) -> Any:
    try:
        # Imported here: the package takes about 1.5 s to import, and most runs do not ask for it.
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "TrainConfig.tensorboard is on but the tensorboard package is not installed (pip install tensorboard); "
            "metrics go to metrics.jsonl only",
            stacklevel=4,
        )
        return None
    return SummaryWriter(str(path), purge_step=purge_step)


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


class EpochMeter:
    """Running sums of one epoch on this rank: each metric weighted by its step's views, the score's numerator
    (``correct``) and the number of views; nothing is read back to the host until ``record``."""

    def __init__(self, device: torch.device) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), device=device)
        self.views = 0
        self.metric = "accuracy"

    def add(self, result: StepOutput) -> None:
        for key, value in result.metrics.items():
            self.sums[key] = self.sums.get(key, 0) + value.float() * result.views
        self.correct = self.correct + result.correct
        self.views += result.views
        self.metric = result.metric

    def state(self) -> dict[str, Any]:
        """The sums, for a mid-epoch checkpoint."""
        return {"sums": self.sums, "correct": self.correct, "views": self.views}

    @classmethod
    def resumed(cls, accum: list[dict[str, Any]], rank: int, world: int, device: torch.device) -> EpochMeter:
        """This rank's sums of a resumed epoch: its own with the same world size; otherwise rank 0 takes the
        saved ranks' total and the others start at zero (the epoch's all-reduce adds them up the same)."""
        meter = cls(device)
        if len(accum) == world:
            mine = accum[rank]
            meter.sums = {k: v.to(device) for k, v in mine["sums"].items()}
            meter.correct, meter.views = mine["correct"].to(device), int(mine["views"])
        elif rank == 0:
            meter.sums = {k: sum(a["sums"][k] for a in accum).to(device) for k in accum[0]["sums"]}
            meter.correct = sum(a["correct"] for a in accum).to(device)
            meter.views = sum(int(a["views"]) for a in accum)
        else:
            meter.sums = {k: torch.zeros((), device=device) for k in accum[0]["sums"]}
        return meter

    def record(self, epoch: int) -> dict[str, Any]:
        """The epoch's means over all ranks (one host read): each metric and ``train_<metric>``.

        Raises:
            ValueError: the epoch had no batches.
            FloatingPointError: the mean task loss is not finite.
        """
        if self.views == 0:
            raise ValueError(f"epoch {epoch + 1} had no training batches")
        sums, views = self.sums, self.views
        if distributed.is_distributed():
            # Every rank's share of the epoch, so each rank's record describes the whole data.
            device = self.correct.device
            totals = torch.stack([*(v.double() for v in sums.values()), self.correct.double()])
            totals = torch.cat([totals, torch.tensor([float(views)], dtype=torch.float64, device=device)])
            values = distributed.all_reduce_sum(totals).tolist()
            means = {k: v / values[-1] for k, v in zip(sums, values[: len(sums)], strict=True)}
            correct, views = values[-2], int(values[-1])
        else:
            means = {k: float(v) / views for k, v in sums.items()}
            correct = float(self.correct)
        record = {**means, f"train_{self.metric}": correct / views}
        if not math.isfinite(record["task_loss"]):
            raise FloatingPointError(f"the training loss became non-finite in epoch {epoch + 1}")
        return record


class NonFiniteFlag:
    """The first step (global numbering, from 1) whose loss or φ output was non-finite, kept on the device (-1 while
    there is none) and read by the host only at ``check``."""

    def __init__(self, device: torch.device) -> None:
        self.bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, finite: torch.Tensor, global_step: int) -> None:
        # Stays on the device: a Python int is a kernel argument here, not a transfer.
        self.bad = torch.where(~finite & (self.bad < 0), global_step, self.bad)

    def check(self, epoch: int, epoch_start: int, where: str) -> None:
        """One host read, agreed by all ranks; raise naming the first non-finite step."""
        first = int(distributed.all_reduce_max(self.bad))
        if first >= 0:
            raise FloatingPointError(
                f"non-finite values (NaN/Inf) in the loss or in φ's output at step {first} (epoch {epoch + 1}, "
                f"step {first - epoch_start} of the epoch), found {where}; training stopped and no checkpoint was "
                "written after it (the last checkpoint, if any, holds the weights from before). Lower the learning "
                "rates, check the data, or try amp=False."
            )


class MetricsLog:
    """``metrics.jsonl`` (one line per epoch) and, optionally, TensorBoard scalars, written by rank 0 only.

    Args:
        out_path: the run's directory (None: nothing is written).
        tensorboard: also write TensorBoard event files (a warning if the package is missing).
        history: the records of a resumed run (the file is rewritten from them: it may hold lines written after
            the checkpoint); None for a fresh run (the file and a previous run's checkpoint rotation are cleared).
        purge_step: TensorBoard's purge step on resume (events after it are dropped).
    """

    def __init__(
        self,
        out_path: Path | None,
        tensorboard: bool,
        history: list[dict[str, Any]] | None,
        purge_step: int | None,
        stale: Iterable[Path] = (),
    ) -> None:
        self.out_path = out_path if out_path is not None and distributed.is_main_process() else None
        self.writer = None
        if self.out_path is None:
            return
        if history is not None:
            atomic_write_bytes(self.out_path / METRICS_FILE, "".join(json_line(r) for r in history).encode())
        else:
            self.out_path.mkdir(parents=True, exist_ok=True)
            for path in (self.out_path / METRICS_FILE, *stale):
                path.unlink(missing_ok=True)
        if tensorboard:
            self.writer = _open_tensorboard(self.out_path / TENSORBOARD_DIR, purge_step)

    def step(self, values: dict[str, float], global_step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"step/{key}", value, global_step)

    def epoch(self, record: dict[str, Any], global_step: int) -> None:
        if self.out_path is None:
            return
        with open(self.out_path / METRICS_FILE, "a") as f:
            f.write(json_line(record))
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(f"epoch/{key}", value, global_step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
