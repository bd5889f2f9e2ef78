"""The training loop: metrics and checkpoints on disk, determinism, exact resume, pre-training, config checks."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_aug
from instaaug import EntropyController, InstaAugObjective, NoAugment, TaskObjective
from instaaug.io import load_checkpoint
from instaaug.models import build_classifier
from instaaug.train import CHECKPOINT_FILE, METRICS_FILE, TensorBatches, TrainConfig, train


def dataset(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)


def components(init_seed: int = 0):
    """Fresh f, φ and objective; ``init_seed`` sets their initial weights."""
    torch.manual_seed(init_seed)
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    aug = tiny_aug(("rotation", "hue"))
    objective = InstaAugObjective(EntropyController(*aug.entropy_range, lam_init=0.05))
    return model, aug, objective


def config(**overrides) -> TrainConfig:
    values = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "aug_lr": 1e-2, "seed": 3, "progress": False}
    return TrainConfig(**{**values, **overrides})


def state(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_run_writes_metrics_and_checkpoint(tmp_path):
    model, aug, objective = components()
    before = state(model, aug)
    history = train(model, aug, objective, dataset(), config(), out_dir=tmp_path)
    assert [r["epoch"] for r in history] == [1, 2]
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert without_time(records) == without_time(history)
    for r in records:
        assert r["phase"] == "joint"
        assert {"task_loss", "entropy", "lam", "surrogate", "train_accuracy", "seconds"} <= r.keys()
        assert 0 <= r["train_accuracy"] <= 1
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert ckpt["epoch"] == 1
    assert_states_equal({f"0.{k}": v for k, v in ckpt["model"].items()}, state(model))
    after = state(model, aug)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("0."))  # f trained
    assert not torch.equal(before["1.net.output.weight"], after["1.net.output.weight"])  # φ trained
    assert objective.controller.steps.item() == 2 * 4  # 64 images / 16 per batch, 2 epochs


def test_same_seed_same_run_different_seed_different_run():
    runs = []
    for seed in (3, 3, 4):
        model, aug, objective = components()
        history = train(model, aug, objective, dataset(), config(seed=seed))
        runs.append((without_time(history), state(model, aug, objective)))
    assert runs[0][0] == runs[1][0]
    assert_states_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    model, aug, objective = components()
    full = train(model, aug, objective, dataset(), config(epochs=3), out_dir=tmp_path / "full")
    expected = state(model, aug, objective)

    def crash_at_third_epoch(epoch: int) -> dict:
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    model, aug, objective = components()
    with pytest.raises(KeyboardInterrupt):
        train(
            model,
            aug,
            objective,
            dataset(),
            config(epochs=3),
            out_dir=tmp_path / "cut",
            evaluate_fn=crash_at_third_epoch,
        )
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)["epoch"] == 1

    model, aug, objective = components(init_seed=99)  # fresh objects; everything must come from the checkpoint
    resumed = train(model, aug, objective, dataset(), config(epochs=3), out_dir=tmp_path / "cut", resume=True)
    assert without_time(resumed) == without_time(full)
    assert_states_equal(state(model, aug, objective), expected)
    assert len((tmp_path / "cut" / METRICS_FILE).read_text().splitlines()) == 3


def test_cosine_aug_lr_decays_over_the_joint_epochs_and_resumes(tmp_path):
    data = dataset()  # 64 inputs, batch 16: 4 steps per epoch
    model, aug, objective = components()
    full = train(model, aug, objective, data, config(epochs=3, aug_lr_schedule="cosine"), out_dir=tmp_path / "full")
    expected = state(model, aug, objective)
    ckpt = load_checkpoint(tmp_path / "full" / CHECKPOINT_FILE)
    assert ckpt["aug_scheduler"]["last_epoch"] == 3 * 4  # stepped once per joint step
    assert ckpt["optimisers"]["phi"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)

    model, aug, objective = components()
    cut = config(epochs=3, aug_lr_schedule="cosine")

    def crash_at_third_epoch(epoch: int) -> dict:
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(model, aug, objective, data, cut, out_dir=tmp_path / "cut", evaluate_fn=crash_at_third_epoch)
    model, aug, objective = components(init_seed=99)
    resumed = train(model, aug, objective, data, cut, out_dir=tmp_path / "cut", resume=True)
    assert without_time(resumed) == without_time(full)
    assert_states_equal(state(model, aug, objective), expected)

    model, aug, objective = components()
    constant = train(model, aug, objective, data, config(epochs=3))
    assert without_time(constant) != without_time(full)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    model, aug, objective = components()
    history = train(model, aug, objective, dataset(32), config(epochs=1), out_dir=tmp_path, resume=True)
    assert len(history) == 1 and (tmp_path / CHECKPOINT_FILE).is_file()


def test_pretrain_epochs_train_f_only():
    model, aug, objective = components()
    snapshots = []
    initial_phi = state(aug)
    initial_f = state(model)
    train(
        model,
        aug,
        objective,
        dataset(),
        config(epochs=1, pretrain_epochs=1),
        evaluate_fn=lambda epoch: snapshots.append((state(model), state(aug))) or {},
    )
    (f_after_pre, phi_after_pre), (_, phi_after_joint) = snapshots
    assert_states_equal(phi_after_pre, initial_phi)
    assert any(not torch.equal(f_after_pre[k], initial_f[k]) for k in initial_f)
    assert not torch.equal(phi_after_joint["0.net.output.weight"], initial_phi["0.net.output.weight"])
    assert objective.controller.steps.item() == 4  # the objective only ran in the joint epoch


def test_pretrain_phases_in_history():
    model, aug, objective = components()
    history = train(model, aug, objective, dataset(32), config(epochs=1, pretrain_epochs=1))
    assert [r["phase"] for r in history] == ["pretrain", "joint"]


def test_frozen_classifier_trains_phi_only():
    model, aug, objective = components()
    model.requires_grad_(False)
    f_params = [p.clone() for p in model.parameters()]
    phi_before = aug.net.output.weight.clone()
    train(model, aug, objective, dataset(32), config(epochs=1))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), f_params, strict=True))
    assert not torch.equal(aug.net.output.weight, phi_before)


def test_fixed_augmentation_and_iterable_data():
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    x, y = dataset(32)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    history = train(model, NoAugment(), TaskObjective(), batches, config(epochs=2, lr=0.05))
    assert len(history) == 2
    assert history[1]["task_loss"] < history[0]["task_loss"]  # it learns (on a tiny fixed set)


def test_tensor_batches_cover_the_data_once_per_epoch():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4)
    assert len(batches) == 3
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10))
    batches.generator.manual_seed(0)
    a = [yb.tolist() for _, yb in batches]
    batches.generator.manual_seed(0)
    assert [yb.tolist() for _, yb in batches] == a
    with pytest.raises(ValueError, match="same length"):
        TensorBatches(x, y[:5], 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": -1}, "epochs"),
        ({"pretrain_epochs": -2}, "pretrain_epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1e-3}, "lr"),
        ({"aug_lr": float("nan")}, "aug_lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"aug_lr_schedule": "linear"}, "aug_lr_schedule"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)
