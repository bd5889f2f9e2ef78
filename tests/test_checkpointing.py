"""Checkpoint files: the digest catches flipped bits, newer versions and other settings are refused, and RNG
states round-trip."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from instaaug.checkpointing import (
    CHECKPOINT_FILE,
    CHECKPOINT_VERSION,
    check_same_run,
    digest,
    read_train_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)


def _state() -> dict:
    return {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 0, "version": CHECKPOINT_VERSION}


def test_digest_changes_with_any_tensor_byte_and_name():
    state = _state()
    base = digest(state)
    flipped = _state()
    flipped["model"]["w"].view(-1).view(torch.int32)[4] ^= 1  # one bit of one float
    renamed = {"model": {"v": state["model"]["w"]}, "epoch": 0, "version": CHECKPOINT_VERSION}
    assert len({base, digest(flipped), digest(renamed)}) == 3
    assert digest({**state, "digest": "anything"}) == base  # the stored digest is not part of what it covers


def test_written_checkpoint_reads_back_and_a_newer_version_is_refused(tmp_path):
    write_checkpoint(tmp_path, _state(), keep_previous=False)
    read = read_train_checkpoint(tmp_path / CHECKPOINT_FILE)
    torch.testing.assert_close(read["model"]["w"], _state()["model"]["w"])
    newer = {**_state(), "version": CHECKPOINT_VERSION + 1}
    write_checkpoint(tmp_path, newer, keep_previous=True)
    with pytest.raises(ValueError, match="newer than this instaaug"):
        read_train_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert (tmp_path / "checkpoint.prev.safetensors").is_file()  # the good one was kept beside it


def test_resume_under_other_settings_is_refused_naming_them(tmp_path):
    @dataclass
    class Settings:
        lr: float = 0.1
        seed: int = 0
        progress: bool = True  # not a result key: may change

    check_same_run({"lr": 0.1, "seed": 0, "progress": False}, Settings(), tmp_path)
    with pytest.raises(ValueError, match=r"lr: 0\.2 in the checkpoint, 0\.1 now"):
        check_same_run({"lr": 0.2, "seed": 0}, Settings(), tmp_path)


def test_rng_states_round_trip():
    cpu = torch.device("cpu")
    saved = rng_state(cpu)
    first = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002 - the legacy global state is saved
    set_rng_state(saved, cpu)
    again = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
