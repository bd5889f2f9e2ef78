"""Shared experiment helpers: --set overrides, method names, thread settings, metrics files."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug import Augerino, AugerinoObjective, InstaAug, InstaAugObjective, NoAugment, RandomAugment
from instaaug.experiments import EXPERIMENTS, crop, get_experiment, rotation
from instaaug.experiments.common import (
    UNIFORM_METHODS,
    apply_overrides,
    build_method,
    torch_threads,
    write_metrics,
)
from instaaug.experiments.methods import MethodRegistry


def test_overrides_are_parsed_by_the_type_of_each_field():
    config = apply_overrides(
        rotation.Config(),
        ["train.epochs=3", "train.lr=0.5", "methods=none,instaaug", "entropy_range=(0.5, 0.75)", "train.device=cpu"],
    )
    assert config.train.epochs == 3 and config.train.lr == 0.5 and config.train.device == "cpu"
    assert config.methods == ("none", "instaaug")
    assert config.entropy_range == (0.5, 0.75)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs", "key=value"),
        ("nope=1", "unknown config key 'nope'"),
        ("train.epochs=1.5", "cannot parse '1.5' for config key 'epochs'"),
        ("epochs=1.5", "cannot parse '1.5' for config key 'epochs'"),  # the old flat key, converted first
        ("entropy_range=a,b", "cannot parse"),
        ("methods=none,dance", "methods must be"),
    ],
)
def test_bad_overrides_are_named(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(rotation.Config(), [item])


def test_uniform_methods_check():
    assert UNIFORM_METHODS.check("none,instaaug") == ("none", "instaaug")
    with pytest.raises(ValueError, match="non-empty subset"):
        UNIFORM_METHODS.check(())


def test_build_method_pairs_augmenters_with_their_objectives():
    kinds = {
        "none": (NoAugment, "TaskObjective"),
        "random": (RandomAugment, "TaskObjective"),
        "augerino": (Augerino, AugerinoObjective.__name__),
        "instaaug": (InstaAug, InstaAugObjective.__name__),
    }
    for method, (aug_type, objective_name) in kinds.items():
        aug, objective = build_method(method, ("rotation",), in_channels=3, instaaug_options={"width": 4})
        assert isinstance(aug, aug_type) and type(objective).__name__ == objective_name
    aug, objective = build_method("instaaug", ("rotation",), in_channels=3, instaaug_options={"entropy_range": (0, 1)})
    assert (objective.controller.h_min, objective.controller.h_max) == (0, 1)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        build_method("magic", ("rotation",), in_channels=3)


def test_torch_threads_restores_the_previous_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_write_metrics_layout(tmp_path):
    path = write_metrics(tmp_path, "rotation", {"none": {"accuracy": 0.5}}, rotation.Config(), seconds=1.0)
    data = json.loads(path.read_text())
    assert data["experiment"] == "rotation" and data["methods"] == {"none": {"accuracy": 0.5}}
    assert data["config"]["train"]["epochs"] == rotation.Config().train.epochs and data["seconds"] == 1.0
    # The device of a nested training config is the one recorded (a fake name: provenance only copies it).
    config = apply_overrides(rotation.Config(), ["train.device=meta"])
    path = write_metrics(tmp_path, "rotation", {}, config)
    assert json.loads(path.read_text())["provenance"]["device"] == "meta"


def test_unknown_experiment():
    with pytest.raises(ValueError, match="known experiments"):
        get_experiment("nope")


@pytest.mark.parametrize("name", ["colour", "crop", "lighting", "rotation", "segment", "tta"])
def test_experiments_nest_their_training_keys_and_accept_the_old_flat_ones(name):
    config_cls = get_experiment(name).Config
    config = apply_overrides(config_cls(), ["train.epochs=7", "train.lr=0.25", "train.batch_size=16"])
    assert (config.train.epochs, config.train.lr, config.train.batch_size) == (7, 0.25, 16)
    assert config.train.pretrain_epochs == config_cls().train.pretrain_epochs  # the rest keep their defaults
    with pytest.warns(DeprecationWarning, match=r"'aug_lr' is deprecated.*'train\.aug_lr'"):
        old = apply_overrides(config_cls(), ["aug_lr=0.5", "seed=9"])
    assert old.train.aug_lr == 0.5 and old.seed == 9


@pytest.mark.parametrize(
    "name",
    ["amortised", "amortised-audio", "colour", "contrastive", "crop", "lighting", "multimodal", "segment", "tta"],
)
def test_builtin_data_experiments_refuse_data_alike_before_any_work(name, tmp_path):
    module = get_experiment(name)
    with pytest.raises(ValueError, match=rf"^the {name} experiment uses .*; it takes no --data; for your own images"):
        module.run(module.Config.quick(), tmp_path / "out", data=str(tmp_path / "x.npz"))
    assert not (tmp_path / "out").exists()


def test_an_experiment_refuses_another_experiments_config(tmp_path):
    colour, crop = get_experiment("colour"), get_experiment("crop")
    with pytest.raises(TypeError, match=r"config must be a instaaug\.experiments\.colour\.Config, got Config"):
        colour.run(crop.Config.quick(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_seeds_take_a_count_or_a_list_on_the_command_line():
    assert apply_overrides(crop.Config.quick(), ["seeds=2"]).seeds == 2
    assert apply_overrides(crop.Config.quick(), ["seeds=0,4"]).seeds == (0, 4)
    for bad in ("seeds=0", "seeds=1,1", "seeds=a,b"):
        with pytest.raises(ValueError, match="seeds"):
            apply_overrides(crop.Config.quick(), [bad])


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_runs_several_seeds_and_declares_its_methods(name):
    module = get_experiment(name)
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    assert {"seed", "seeds", "workers"} <= set(fields), name
    seeds = dataclasses.replace(module.Config.quick(), seeds=2).seeds  # --seeds N (lighting keeps the list)
    assert seeds == 2 or len(seeds) == 2
    if "methods" in fields:  # the amortised experiments compare models and corners, not methods
        assert isinstance(module.METHODS, MethodRegistry) and set(module.Config().methods) <= set(module.METHODS)
