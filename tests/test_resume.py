"""Crash-safe, resumable runs: mid-epoch checkpoints, a real process killed with SIGKILL and resumed, damaged
checkpoints refused (and kept), the CLI's --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from _resume_script import components, config, dataset, state, without_time
from instaaug.experiments.common import torch_threads
from instaaug.io import load_tensors
from instaaug.train import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    read_train_checkpoint,
    train,
)

TESTS = Path(__file__).parent


def crash_at(step: int):
    """A task loss that raises KeyboardInterrupt at its ``step``-th call (1-based)."""
    calls = [0]

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == step:
            raise KeyboardInterrupt
        return F.cross_entropy(logits, y, reduction="none")

    return loss


@pytest.mark.parametrize("kind", ["tensors", "dataloader"])
def test_mid_epoch_resume_matches_uninterrupted_run(tmp_path, kind):
    def data():
        if kind == "tensors":
            return dataset()
        # order from torch's global RNG (seeded per epoch): replayed on resume
        return DataLoader(TensorDataset(*dataset()), batch_size=16, shuffle=True)

    model, aug, objective = components()
    full = train(model, aug, objective, data(), config(checkpoint_every=3), out_dir=tmp_path / "full")
    expected = state(model, aug, objective)

    model, aug, objective = components()
    with pytest.raises(KeyboardInterrupt):  # 4 steps per epoch: checkpoints at steps 3, 4 (epoch end) and 6
        train(
            model, aug, objective, data(), config(checkpoint_every=3), out_dir=tmp_path / "cut", task_loss=crash_at(8)
        )
    ckpt = read_train_checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)
    assert (ckpt["epoch"], ckpt["step"], ckpt["complete"], ckpt["global_step"]) == (1, 2, False, 6)
    assert read_train_checkpoint(tmp_path / "cut" / PREVIOUS_CHECKPOINT_FILE)["global_step"] == 4

    model, aug, objective = components(init_seed=99)  # everything must come from the checkpoint
    resumed = train(model, aug, objective, data(), config(checkpoint_every=3), out_dir=tmp_path / "cut", resume=True)
    assert without_time(resumed) == without_time(full)
    after = state(model, aug, objective)
    for key in expected:
        assert torch.equal(after[key], expected[key]), key
    lines = [json.loads(line) for line in (tmp_path / "cut" / METRICS_FILE).read_text().splitlines()]
    assert without_time(lines) == without_time(full)


def _launch(out: Path, slow_after: int) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from _resume_script import main; main(*sys.argv[1:3])"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, str(out), str(slow_after)], env=env)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    out = tmp_path / "run"
    proc = _launch(out, slow_after=3)
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_FILE).is_file():  # the first checkpoint comes after step 3, mid-epoch
            assert proc.poll() is None, "the training process ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt = read_train_checkpoint(out / CHECKPOINT_FILE)
    assert (ckpt["epoch"], ckpt["step"], ckpt["complete"]) == (0, 3, False)  # killed mid-epoch
    assert not (out / "final.safetensors").exists()

    resumed = _launch(out, slow_after=0)
    # meanwhile, the same run uninterrupted in this process (same thread count: same floating-point results)
    with torch_threads(1):
        model, aug, objective = components()
        history = train(model, aug, objective, dataset(), config(checkpoint_every=3))
    assert resumed.wait(timeout=120) == 0
    assert json.loads((out / "history.json").read_text()) == without_time(history)
    final = load_tensors(out / "final.safetensors")
    expected = state(model, aug, objective)
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key


def _finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    model, aug, objective = components()
    train(model, aug, objective, dataset(32), config(epochs=2, checkpoint_every=1), out_dir=out)
    return out


def _assert_refused(out: Path, match: str) -> None:
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    model, aug, objective = components()
    with pytest.raises(ValueError, match=match) as info:
        train(model, aug, objective, dataset(32), config(epochs=3, checkpoint_every=1), out_dir=out, resume=True)
    assert str(out / PREVIOUS_CHECKPOINT_FILE) in str(info.value)  # the way back is named
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing overwritten


def test_truncated_checkpoint_is_refused_and_kept(tmp_path):
    out = _finished_run(tmp_path)
    path = out / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_refused(out, "truncated, corrupted")


def test_corrupted_checkpoint_data_is_refused_and_kept(tmp_path):
    out = _finished_run(tmp_path)
    path = out / CHECKPOINT_FILE
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # one flipped byte in the tensor data: the file still parses
    path.write_bytes(bytes(raw))
    _assert_refused(out, "corrupted: its tensors do not match")


def test_previous_checkpoint_resumes(tmp_path):
    """The kept previous checkpoint is a good one: moved in place, the run resumes from it."""
    out = _finished_run(tmp_path)
    os.replace(out / PREVIOUS_CHECKPOINT_FILE, out / CHECKPOINT_FILE)
    assert read_train_checkpoint(out / CHECKPOINT_FILE)["global_step"] == 3  # 2 steps per epoch, the last is 4
    model, aug, objective = components()
    history = train(model, aug, objective, dataset(32), config(epochs=2), out_dir=out, resume=True)
    assert len(history) == 2


def test_resume_refuses_other_settings(tmp_path):
    out = _finished_run(tmp_path)
    model, aug, objective = components()
    with pytest.raises(ValueError, match=r"lr: 0\.01 in the checkpoint, 0\.1 now"):
        train(model, aug, objective, dataset(32), config(lr=0.1), out_dir=out, resume=True)


def test_cli_resume(tmp_path, capsys):
    from instaaug.cli import main

    out = tmp_path / "rot"
    argv = ["run", "rotation", "--quick", "--out", str(out), "--checkpoint-every", "2"]
    argv += ["--set", "methods=instaaug", "--set", "n_train=64", "--set", "n_test=32", "--set", "train.epochs=1"]
    assert main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())
    ckpt = out / "instaaug" / CHECKPOINT_FILE
    assert read_train_checkpoint(ckpt)["complete"]
    assert main([*argv, "--resume"]) == 0  # nothing left to train: the same results
    again = json.loads((out / "metrics.json").read_text())
    for metrics in (first, again):
        for m in metrics["methods"].values():
            m.pop("train_seconds")
    assert again["methods"] == first["methods"]
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert ckpt.stat().st_size == 100  # left as it was
