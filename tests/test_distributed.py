"""Distributed data parallel: 2 CPU processes (gloo) keep λ and every parameter identical, match one process with
the same global batch where that is exact, and only rank 0 writes files.

Exact case: an augmenter without randomness (``NoAugment``) and a classifier without batch statistics (no
BatchNorm). Each rank then computes the mean loss of its half of the global batch and DDP averages the two
gradients: the gradient of the global batch mean, as one process computes it, up to float rounding. With random
augmentation the ranks draw different samples (each rank is seeded differently), so only identity across ranks
holds, not equality with one process; with BatchNorm, each rank normalises with its own half's statistics.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from instaaug import distributed
from instaaug.io import load_checkpoint, load_tensors, save_tensors
from instaaug.train import CHECKPOINT_FILE, METRICS_FILE, PREVIOUS_CHECKPOINT_FILE, TensorBatches, TrainConfig, train

WORLD = 2


def _components(init_seed: int = 0):
    from conftest import tiny_aug
    from instaaug import EntropyController, InstaAugObjective
    from instaaug.models import build_classifier

    torch.manual_seed(init_seed)
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    aug = tiny_aug(("rotation", "hue"))
    objective = InstaAugObjective(EntropyController(*aug.entropy_range, lam_init=0.05, rate=1.1))
    return model, aug, objective


def _plain_components():
    from instaaug import NoAugment, TaskObjective
    from instaaug.models import build_classifier

    torch.manual_seed(1)
    return build_classifier("small_cnn", 3, 2, width=4, depth=2, norm="none"), NoAugment(), TaskObjective()


def _dataset(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)


def _config(**overrides) -> TrainConfig:
    values = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "aug_lr": 1e-2, "seed": 3, "progress": False}
    return TrainConfig(**{**values, **overrides})


def _state(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def _crash(logits: torch.Tensor, y: torch.Tensor, calls: list[int] = [0]) -> torch.Tensor:  # noqa: B006
    """Cross-entropy that raises KeyboardInterrupt at its 8th call (step 8)."""
    calls[0] += 1
    if calls[0] == 8:
        raise KeyboardInterrupt
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def _worker(rank: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = Path(tmp)
        # 1. learned augmentation: λ recorded after every step of the controller
        model, aug, objective = _components()
        lams: list[torch.Tensor] = []
        update = objective.controller.update
        objective.controller.update = lambda h: lams.append(update(h).clone()) or lams[-1]  # type: ignore[method-assign]
        history = train(model, aug, objective, _dataset(), _config(), out_dir=out / "run")
        save_tensors(out / f"instaaug{rank}.safetensors", {**_state(model, aug, objective), "lams": torch.stack(lams)})
        (out / f"history{rank}.json").write_text(json.dumps(history))
        # 2. the same run interrupted after a mid-epoch checkpoint (step 6 of 8) on both ranks, then resumed
        model, aug, objective = _components()
        with contextlib.suppress(KeyboardInterrupt):
            train(model, aug, objective, _dataset(), _config(checkpoint_every=3), out_dir=out / "cut", task_loss=_crash)
        model, aug, objective = _components(init_seed=99)
        history = train(model, aug, objective, _dataset(), _config(), out_dir=out / "cut", resume=True)
        save_tensors(out / f"resumed{rank}.safetensors", _state(model, aug, objective))
        (out / f"resumed_history{rank}.json").write_text(json.dumps(history))
        # 3. the exact case
        model, aug, objective = _plain_components()
        history = train(model, aug, objective, _dataset(), _config())
        save_tensors(out / f"plain{rank}.safetensors", _state(model))
        (out / f"plain_history{rank}.json").write_text(json.dumps(history))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(tmp)), nprocs=WORLD, join=True)
    return tmp


def test_lambda_and_parameters_identical_across_ranks(two_ranks):
    a, b = (load_tensors(two_ranks / f"instaaug{r}.safetensors") for r in range(WORLD))
    assert a.keys() == b.keys()
    assert a["lams"].shape == (8,)  # 64 inputs / global batch 16 = 4 steps per epoch, 2 epochs: λ after each
    assert torch.equal(a["lams"], b["lams"])  # λ identical at every step
    assert len(set(a["lams"].tolist())) > 1  # and it moved
    for key in a:
        assert torch.equal(a[key], b[key]), key
    h0, h1 = (json.loads((two_ranks / f"history{r}.json").read_text()) for r in range(WORLD))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in h0]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in h1]  # epoch metrics of all the data


def test_resume_under_ddp_matches_uninterrupted_run(two_ranks):
    """Each rank resumes with its own RNG state and running sums: the same weights and epoch metrics."""
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    full = json.loads((two_ranks / "history0.json").read_text())
    expected = load_tensors(two_ranks / "instaaug0.safetensors")
    for r in range(WORLD):
        assert strip(json.loads((two_ranks / f"resumed_history{r}.json").read_text())) == strip(full)
        resumed = load_tensors(two_ranks / f"resumed{r}.safetensors")
        for key in resumed:
            assert torch.equal(resumed[key], expected[key]), key


def test_only_rank_zero_writes(two_ranks):
    lines = (two_ranks / "run" / METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2  # one line per epoch, not one per rank
    assert sorted(p.name for p in (two_ranks / "run").iterdir()) == sorted(
        [METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE]
    )
    ckpt = load_checkpoint(two_ranks / "run" / CHECKPOINT_FILE)
    saved = load_tensors(two_ranks / "instaaug0.safetensors")
    for key, value in ckpt["model"].items():
        assert torch.equal(value, saved[f"0.{key}"]), key
    assert ckpt["world_size"] == WORLD and len(ckpt["rng"]) == WORLD  # every rank's RNG state, for resuming


def test_two_ranks_match_one_process_with_the_same_global_batch(two_ranks):
    model, aug, objective = _plain_components()
    history = train(model, aug, objective, _dataset(), _config())
    single = _state(model)
    ranked = load_tensors(two_ranks / "plain0.safetensors")
    for key in single:
        torch.testing.assert_close(ranked[key], single[key], rtol=1e-5, atol=1e-6)
    ranked_history = json.loads((two_ranks / "plain_history0.json").read_text())
    for one, two in zip(history, ranked_history, strict=True):
        assert one["task_loss"] == pytest.approx(two["task_loss"], rel=1e-5)
        assert one["train_accuracy"] == pytest.approx(two["train_accuracy"])


def test_shards_of_a_global_batch_are_the_single_process_batch():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    single = [yb for _, yb in TensorBatches(x, y, 4).shard(order)]
    shards = [list(TensorBatches(x, y, 4, rank=r, world_size=2).shard(order)) for r in range(2)]
    assert all(len(s) == len(single) == 3 for s in shards)
    for i, batch in enumerate(single[:2]):  # full batches: the two shards are exactly the batch
        assert sorted(torch.cat([shards[0][i][1], shards[1][i][1]]).tolist()) == sorted(batch.tolist())
    # the last batch (2 inputs) splits evenly; every rank gets an equal share
    assert [s[2][1].shape[0] for s in shards] == [1, 1]
    odd = [list(TensorBatches(x[:9], y[:9], 4, rank=r, world_size=2).shard(order[order < 9])) for r in range(2)]
    assert [s[2][1].shape[0] for s in odd] == [1, 1]  # 1 leftover input padded by wrapping around the order
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        TensorBatches(x, y, 5, world_size=2)


def test_helpers_in_a_single_process():
    t = torch.tensor([1.0, 2.0])
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main_process()
    assert distributed.all_reduce_mean(t) is t and distributed.all_reduce_sum(t) is t
    assert distributed.gather_objects(3) == [3] and distributed.broadcast_object("a") == "a"
    assert distributed.init_from_env() is False  # no torchrun environment


@pytest.mark.slow
def test_torchrun_cli_run(tmp_path):
    """The real launcher: `torchrun --nproc_per_node=2 -m instaaug run ...` trains with DDP, rank 0 alone writes."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun is not None
    out = tmp_path / "rot"
    args = ["run", "rotation", "--quick", "--out", str(out), "--set", "methods=instaaug", "--set", "n_train=200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_port", str(_free_port()), "-m", "instaaug", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("metrics:") == 1  # the summary is printed by rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"instaaug"}
    assert len((out / "instaaug" / METRICS_FILE).read_text().splitlines()) == 3  # 1 pre-training + 2 joint epochs
    assert load_checkpoint(out / "instaaug" / CHECKPOINT_FILE)["world_size"] == 2
