"""Logging: JSONL always, TensorBoard event files on request, progress bars only when asked or on a terminal."""

from __future__ import annotations

import json

import pytest
import torch

from _resume_script import components, config, dataset
from instaaug.train import METRICS_FILE, TENSORBOARD_DIR, current_train_overrides, predict, train, train_overrides


def test_tensorboard_event_file_holds_the_epoch_and_step_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, aug, objective = components()
    train(model, aug, objective, dataset(), config(tensorboard=True, log_every=2), out_dir=tmp_path)
    events = list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"epoch/task_loss", "epoch/entropy", "epoch/lam", "epoch/train_accuracy", "step/task_loss"} <= tags
    assert [e.step for e in acc.Scalars("epoch/task_loss")] == [4, 8]  # global steps at the ends of the epochs
    assert [e.step for e in acc.Scalars("step/lam")] == [2, 4, 6, 8]
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [e.value for e in acc.Scalars("epoch/task_loss")] == pytest.approx([r["task_loss"] for r in records])


def test_tensorboard_is_off_by_default(tmp_path):
    model, aug, objective = components()
    train(model, aug, objective, dataset(32), config(epochs=1), out_dir=tmp_path)
    assert not (tmp_path / TENSORBOARD_DIR).exists()
    assert (tmp_path / METRICS_FILE).is_file()


def test_progress_quiet_off_a_terminal_and_shown_on_request(capfd):
    model, aug, objective = components()
    # progress=None: a bar only on a terminal, and pytest's captured stderr is not one
    train(model, aug, objective, dataset(32), config(epochs=1, progress=None))
    predict(model, torch.rand(8, 3, 8, 8), batch_size=4)
    assert capfd.readouterr().err == ""
    train(model, aug, objective, dataset(32), config(epochs=1, progress=True))
    predict(model, torch.rand(8, 3, 8, 8), batch_size=4, progress=True)
    err = capfd.readouterr().err
    assert "epoch 1/1" in err and "predict" in err


def test_train_overrides_reach_every_train_call(tmp_path):
    model, aug, objective = components()
    with train_overrides(tensorboard=True, checkpoint_every=1):
        assert current_train_overrides() == {"tensorboard": True, "checkpoint_every": 1}
        train(model, aug, objective, dataset(32), config(epochs=1), out_dir=tmp_path)
    assert (tmp_path / TENSORBOARD_DIR).is_dir()
    with pytest.raises(ValueError, match="unknown training override"), train_overrides(bogus=1):
        pass
