"""The amortised experiments (vision, and audio's config): data, nested config keys and their deprecated flat
names, several seeds, and the quick run end to end through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from instaaug.amortised import PretrainConfig, ProbeConfig, load_backbone
from instaaug.cli import main
from instaaug.config_files import load_config
from instaaug.experiments import amortised, amortised_audio
from instaaug.experiments.common import apply_overrides

EXPERIMENTS = [amortised, amortised_audio]
#: A valid value of every old flat key (as ``--set`` would give it).
OLD_VALUES = {
    "method": "moco",
    "pretrain_epochs": "3",
    "batch_size": "32",
    "lr": "0.01",
    "temperature": "0.5",
    "probe_epochs": "2",
    "probe_lr": "0.05",
    "i_lr": "0.3",
    "parametrisation": "sigmoid",
    "readout_steps": "25",
}


def test_coloured_digits_targets_match_the_images():
    data = amortised.coloured_digits(64, "train", seed=0, size=20)
    assert data.images.shape == (64, 3, 20, 20) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.digit.dtype == data.colour.dtype == torch.int64
    assert data.colour.max() < amortised.NUM_COLOURS and data.digit.max() <= 9
    # The position target is the centre of the ink's bounding box (to within the blank rows of an 8×8 digit).
    ink = data.images.amax(1) > 0.05
    ys, xs = torch.arange(20.0)[None, :, None], torch.arange(20.0)[None, None, :]
    centroid = torch.stack(((ink * xs).sum((1, 2)), (ink * ys).sum((1, 2))), 1) / ink.sum((1, 2))[:, None]
    assert ((centroid + 0.5) / 20 - data.position).abs().amax() < 0.15
    # The hue class is what the colour of the ink says: each class's mean chromaticity differs from the others'.
    chroma = data.images.sum((2, 3)) / data.images.sum((1, 2, 3))[:, None]
    means = torch.stack([chroma[data.colour == c].mean(0) for c in range(amortised.NUM_COLOURS)])
    assert torch.cdist(means, means).add(torch.eye(amortised.NUM_COLOURS)).min() > 0.05
    # Test images come from the held-out source digits; generation is reproducible.
    again = amortised.coloured_digits(64, "train", seed=0, size=20)
    assert torch.equal(again.images, data.images)


def test_quick_run_writes_the_promised_metrics(tmp_path):
    out = tmp_path / "run"
    # nested keys on the command line (the --quick values, so the run is the quick one)
    argv = ["--set", "threads=1", "--set", "pretrain.epochs=1", "--set", "probe.readout_steps=40"]
    assert main(["run", "amortised", "--quick", "--out", str(out), *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "amortised" and metrics["config"]["threads"] == 1
    assert metrics["config"]["pretrain"]["epochs"] == 1 and metrics["config"]["probe"]["readout_steps"] == 40
    # one seed: the means are that seed's own numbers, every spread 0
    (record,) = metrics["per_seed"]
    assert record["seed"] == 0 and metrics["methods"]["amortised"]["seeds"] == 1
    for name, task in metrics["tasks"].items():
        assert task["score_learned"] == record["tasks"][name]["score_learned"] and task["score_learned_std"] == 0
        assert task["score_corners"] == record["tasks"][name]["score_corners"]
    assert list(metrics["tasks"]) == ["digit", "colour", "position"]
    # One ordinary model with every augmentation, and one per task's own corner (the task-specific comparison).
    assert set(metrics["methods"]) == {"amortised", "unconditioned", "unconditioned_0,1", "unconditioned_1,0"}
    for method in metrics["methods"].values():
        assert method["chance_loss"] == pytest.approx(math.log(2 * 64 - 1))
    for name, task in metrics["tasks"].items():
        assert task["metric"] == ("r2" if name == "position" else "accuracy")
        assert set(task["learned_i"]) == {"spatial", "appearance"}
        assert all(0 <= v <= 1 for v in task["learned_i"].values())
        assert list(task["score_corners"]) == ["0,1", "1,0", "1,1"]
        assert task["task_corner"] == amortised.TASK_CORNERS[name]
        assert (
            task["score_task_specific"]
            == task["score_ordinary_models"][
                "unconditioned" if name == "digit" else f"unconditioned_{task['task_corner']}"
            ]
        )
        scores = [task["score_learned"], task["score_unconditioned"], task["score_task_specific"]]
        for value in [*scores, *task["score_corners"].values()]:
            assert isinstance(value, float) and value <= 1
            if task["metric"] == "accuracy":
                assert value >= 0
    assert (out / "amortised_i.png").stat().st_size > 5_000
    for name in ("amortised", "unconditioned"):
        net = load_backbone(out / name)
        assert net(torch.rand(2, 3, 16, 16), {"spatial": 1.0, "appearance": 0.0}).shape == (2, net.feature_dim)


def test_config_rejects_unknown_tasks_and_data_files(tmp_path, capsys):
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        amortised.Config(tasks=("digit", "shape"))
    assert main(["run", "amortised", "--quick", "--out", str(tmp_path), "--data", "x.npz"]) == 2
    assert "built-in data only" in capsys.readouterr().err


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_nested_pretrain_and_probe_keys_by_set_and_by_file(module, tmp_path):
    quick = module.Config.quick()
    config = apply_overrides(quick, ["pretrain.epochs=3", "probe.lr=0.5", "probe.refit=false"])
    assert (config.pretrain.epochs, config.probe.lr, config.probe.refit) == (3, 0.5, False)
    # the rest of each group keeps its --quick values, not the library's defaults
    assert config.pretrain.batch_size == quick.pretrain.batch_size != PretrainConfig().batch_size
    assert config.probe.epochs == quick.probe.epochs != ProbeConfig().epochs
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pretrain": {"epochs": 3}, "probe": {"lr": 0.5, "refit": False}}))
    assert load_config(path, module.Config, base=quick) == config
    with pytest.raises(ValueError, match="pretrain"):
        apply_overrides(quick, ["pretrain.epoch=3"])


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_old_flat_keys_are_deprecated_aliases_of_the_nested_ones(module, tmp_path):
    quick = module.Config.quick()
    renames = module.Config.RENAMED_KEYS
    assert set(renames) <= set(OLD_VALUES) and {"pretrain_epochs", "probe_lr", "batch_size"} <= set(renames)
    for old, new in renames.items():
        with pytest.warns(DeprecationWarning, match=rf"'{old}' is deprecated.*'{new}'"):
            by_old = apply_overrides(quick, [f"{old}={OLD_VALUES[old]}"])
        by_new = apply_overrides(quick, [f"{new}={OLD_VALUES[old]}"])
        assert by_old == by_new != quick, old
        path = tmp_path / f"{old}.json"
        text = OLD_VALUES[old]
        path.write_text(json.dumps({old: text if text.isalpha() else json.loads(text)}))
        with pytest.warns(DeprecationWarning, match=rf"'{old}' is deprecated"):
            assert load_config(path, module.Config, base=quick) == by_new, old
    # ``batch_size`` set both batch sizes; it now names the pre-training's only
    assert renames["batch_size"] == "pretrain.batch_size"


@pytest.mark.parametrize("module", EXPERIMENTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_config_checks_the_groups_and_the_seeds(module):
    with pytest.raises(ValueError, match=r"pretrain\.device is set by the experiment: use --set device="):
        module.Config(pretrain=PretrainConfig(device="meta"))
    with pytest.raises(ValueError, match=r"probe\.seed is set by the experiment"):
        apply_overrides(module.Config(), ["probe.seed=3"])
    with pytest.raises(TypeError, match="pretrain must be a PretrainConfig, got ProbeConfig"):
        module.Config(pretrain=ProbeConfig())
    with pytest.raises(ValueError, match="seeds must be ≥ 1"):
        module.Config(seeds=0)
    with pytest.raises(ValueError, match="seeds must not repeat"):
        module.Config(seeds=(1, 1))
    with pytest.raises(ValueError, match="workers"):
        module.Config(workers=-1)
    assert module.Config(seeds=[3, 5]).seeds == (3, 5)  # a list (from Python) is kept as a tuple
    config = module.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pretrain.epochs = 3  # type: ignore[misc]


def test_mean_over_seeds_averages_every_number_and_keeps_the_rest():
    records = [
        {"a": 1.0, "d": {"x": 1.0, "y": 2.0}, "n": 7, "s": "acc", "none": None, "l": [{"i": 0.0}], "c": {"0,1": 2.0}},
        {"a": 3.0, "d": {"x": 3.0, "y": 2.0}, "n": 7, "s": "acc", "none": None, "l": [{"i": 1.0}], "c": {"1,0": 4.0}},
    ]
    mean = amortised.mean_over_seeds(records)
    assert mean["a"] == 2.0 and mean["a_std"] == pytest.approx(math.sqrt(2))
    assert mean["d"] == {"x": 2.0, "y": 2.0} and mean["d_std"] == pytest.approx({"x": math.sqrt(2), "y": 0.0})
    assert (mean["n"], mean["s"], mean["none"]) == (7, "acc", None) and "n_std" not in mean
    assert mean["l"] == [{"i": 0.5}]  # lists element by element, means only
    assert mean["c"] == {"0,1": 2.0, "1,0": 4.0}  # a key some seeds lack: over the seeds that have it
    one = records[:1]
    assert {k: v for k, v in amortised.mean_over_seeds(one).items() if not k.endswith("_std")} == records[0]


def test_several_seeds_are_whole_runs_summarised_as_mean_and_std(tmp_path):
    base = dataclasses.replace(
        amortised.Config.quick(), tasks=("colour",), task_specific=False, grid_points=1, workers=1, threads=1
    )
    metrics = amortised.run(dataclasses.replace(base, seeds=(0, 1)), tmp_path / "two")
    single = amortised.run(dataclasses.replace(base, seed=1), tmp_path / "one")
    written = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert written["tasks"] == metrics["tasks"] and [r["seed"] for r in written["per_seed"]] == [0, 1]

    def timeless(record):
        return {k: v for k, v in record.items() if k not in ("seconds", "pretrain_seconds")}

    # each seed's record is that seed's own run, as a one-seed run gives it
    second = written["per_seed"][1]
    assert timeless(second["tasks"]["colour"]) == timeless(single["per_seed"][0]["tasks"]["colour"])
    assert timeless(second["methods"]["amortised"]) == timeless(single["per_seed"][0]["methods"]["amortised"])
    scores = torch.tensor([r["tasks"]["colour"]["score_learned"] for r in written["per_seed"]], dtype=torch.float64)
    task = written["tasks"]["colour"]
    assert task["seeds"] == 2 and written["methods"]["amortised"]["seeds"] == 2
    assert task["score_learned"] == pytest.approx(float(scores.mean()))
    assert task["score_learned_std"] == pytest.approx(float(scores.std()))
    assert set(task["score_corners_std"]) == set(task["score_corners"]) == {"0,1", "1,0", "1,1"}
    for s in (0, 1):
        assert load_backbone(tmp_path / "two" / f"seed{s}" / "amortised").groups == ("spatial", "appearance")
    table = amortised.summary(written)
    assert f"{task['score_learned']:.3f}±{task['score_learned_std']:.3f}" in table
    assert "±" not in amortised.summary(single)


def _without(record, *keys):
    """A nested record without the given keys anywhere (timings differ from run to run)."""
    if isinstance(record, dict):
        return {k: _without(v, *keys) for k, v in record.items() if k not in keys}
    if isinstance(record, list):
        return [_without(v, *keys) for v in record]
    return record


@pytest.mark.parametrize("module", [amortised, amortised_audio])
def test_the_untrained_baseline_is_scored_and_changes_no_other_number(module, tmp_path):
    task = next(iter(module.TASKS))
    config = dataclasses.replace(module.Config.quick(), tasks=(task,), task_specific=False, threads=1)
    runs = {f: module.run(dataclasses.replace(config, untrained=f), tmp_path / str(f)) for f in (True, False)}
    with_baseline, without = runs[True]["tasks"][task], runs[False]["tasks"][task]
    assert isinstance(with_baseline["score_untrained"], float) and 0 <= with_baseline["score_untrained"] <= 1
    assert "score_untrained" not in without
    timings = ("seconds", "seconds_std", "pretrain_seconds", "pretrain_seconds_std", "score_untrained")
    assert _without(runs[True]["per_seed"], *timings) == _without(runs[False]["per_seed"], *timings)
    assert "untr." in module.summary(json.loads((tmp_path / "True" / "metrics.json").read_text())).splitlines()[0]
