"""Epoch metrics of train(): sums weighted by views, a resumed epoch's sums under another world size, and the
non-finite flag that names the first bad step."""

from __future__ import annotations

import pytest
import torch

from instaaug.step import StepOutput
from instaaug.train_log import EpochMeter, NonFiniteFlag

CPU = torch.device("cpu")


def _step(loss: float, correct: float, views: int, metric: str = "accuracy") -> StepOutput:
    return StepOutput({"task_loss": torch.tensor(loss)}, torch.tensor(correct), views, torch.tensor(True), metric)


def test_epoch_record_weights_each_step_by_its_views():
    meter = EpochMeter(CPU)
    meter.add(_step(1.0, 3.0, 4))
    meter.add(_step(4.0, 1.0, 2, metric="mae"))
    record = meter.record(epoch=0)
    assert record["task_loss"] == pytest.approx((1.0 * 4 + 4.0 * 2) / 6)
    assert record == {"task_loss": pytest.approx(2.0), "train_mae": pytest.approx(4 / 6)}  # the last step's metric


def test_epoch_record_refuses_an_empty_or_non_finite_epoch():
    with pytest.raises(ValueError, match="epoch 3 had no training batches"):
        EpochMeter(CPU).record(epoch=2)
    meter = EpochMeter(CPU)
    meter.add(_step(float("nan"), 0.0, 2))
    with pytest.raises(FloatingPointError, match="non-finite in epoch 1"):
        meter.record(epoch=0)


def test_resumed_sums_keep_the_total_whatever_the_world_size():
    saved = []
    for loss, correct, views in ((1.0, 2.0, 4), (3.0, 1.0, 4)):  # two ranks wrote the checkpoint
        meter = EpochMeter(CPU)
        meter.add(_step(loss, correct, views))
        saved.append(meter.state())
    same = [EpochMeter.resumed(saved, rank, 2, CPU) for rank in (0, 1)]
    assert [m.views for m in same] == [4, 4] and float(same[1].sums["task_loss"]) == 12.0
    # One process now: rank 0 takes both ranks' sums; with three, ranks 1 and 2 start from zero.
    alone = EpochMeter.resumed(saved, 0, 1, CPU)
    assert alone.views == 8 and float(alone.correct) == 3.0 and float(alone.sums["task_loss"]) == 16.0
    others = [EpochMeter.resumed(saved, rank, 3, CPU) for rank in (1, 2)]
    assert all(m.views == 0 and float(m.correct) == 0.0 and float(m.sums["task_loss"]) == 0.0 for m in others)


def test_non_finite_flag_names_the_first_bad_step_only():
    flag = NonFiniteFlag(CPU)
    flag.check(epoch=0, epoch_start=0, where="here")  # nothing yet
    for step, finite in ((1, True), (2, False), (3, False)):
        flag.update(torch.tensor(finite), step)
    with pytest.raises(FloatingPointError, match=r"at step 2 \(epoch 2, step 1 of the epoch\), found at the end"):
        flag.check(epoch=1, epoch_start=1, where="at the end")
