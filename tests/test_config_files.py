"""Experiment configs from JSON/TOML files: strict keys and types, and `instaaug run --config`."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from instaaug.cli import main
from instaaug.config_files import config_from_mapping, load_config
from instaaug.experiments import EXPERIMENTS, get_experiment
from instaaug.experiments.rotation import Config as RotationConfig


@dataclasses.dataclass(frozen=True)
class _Config:
    seed: int = 0
    lr: float = 1e-3
    name: str = "a"
    flag: bool = False
    methods: tuple[str, ...] = ("x",)
    band: tuple[float, float] = (0.0, 1.0)
    progress: bool | None = None


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_and_json_give_the_same_typed_config(tmp_path):
    toml = _write(tmp_path, "c.toml", 'seed = 3\nlr = 1\nmethods = ["a", "b"]\nband = [0.5, 2]\nflag = true\n')
    js = _write(
        tmp_path, "c.json", json.dumps({"seed": 3, "lr": 1, "methods": ["a", "b"], "band": [0.5, 2], "flag": True})
    )
    a, b = load_config(toml, _Config), load_config(js, _Config)
    assert a == b == _Config(seed=3, lr=1.0, methods=("a", "b"), band=(0.5, 2.0), flag=True)
    assert isinstance(a.lr, float) and isinstance(a.methods, tuple)


def test_unknown_keys_are_named(tmp_path):
    path = _write(tmp_path, "c.toml", "seed = 1\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['learning_rate'\].*valid keys"):
        load_config(path, _Config)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),  # a bool is not an int here
        ({"lr": "fast"}, "lr"),
        ({"flag": 1}, "flag"),
        ({"methods": "abc"}, "methods"),
        ({"methods": ["a", 2]}, r"methods\[1\]"),
        ({"band": [1.0]}, "band"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_wrong_types_are_named(values, key):
    with pytest.raises(TypeError, match=f"config key '{key}'"):
        config_from_mapping(_Config, values)


def test_optional_accepts_none_and_its_type():
    assert config_from_mapping(_Config, {"progress": None}).progress is None
    assert config_from_mapping(_Config, {"progress": True}).progress is True


def test_base_supplies_the_keys_not_given():
    base = _Config(seed=7, name="quick")
    assert config_from_mapping(_Config, {"lr": 0.5}, base=base) == _Config(seed=7, name="quick", lr=0.5)


@pytest.mark.parametrize("text, match", [("[1, 2]", "table"), ("{", "not valid JSON")])
def test_malformed_json(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_config(_write(tmp_path, "c.json", text), _Config)


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(_write(tmp_path, "c.toml", "seed = = 1\n"), _Config)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nothing.toml", _Config)


def test_post_init_checks_still_run(tmp_path):
    path = _write(tmp_path, "c.json", json.dumps({"methods": ["instaaug", "nope"]}))
    with pytest.raises(ValueError, match="methods"):
        load_config(path, RotationConfig)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_config_round_trips_through_json(tmp_path, name):
    config_cls = get_experiment(name).Config
    config = config_cls.quick()
    values = {k: v for k, v in dataclasses.asdict(config).items() if not (isinstance(v, float) and math.isnan(v))}
    path = _write(tmp_path, "c.json", json.dumps(values))
    assert load_config(path, config_cls) == config


def test_cli_run_with_config_file_and_set_after_it(tmp_path, monkeypatch):
    seen = {}
    module = get_experiment("rotation")

    def fake_run(config, out_dir, data=None):
        seen["config"] = config
        return {}

    monkeypatch.setattr(module, "run", fake_run)
    monkeypatch.setattr(module, "summary", lambda metrics: "")
    path = _write(tmp_path, "c.toml", 'epochs = 2\nlr = 0.01\nmethods = ["random", "instaaug"]\n')
    argv = ["run", "rotation", "--quick", "--config", str(path), "--set", "train.lr=0.5", "--out", str(tmp_path)]
    with pytest.warns(DeprecationWarning, match="'epochs' is deprecated"):  # the file's old flat keys still work
        assert main(argv) == 0
    config = seen["config"]
    assert (config.train.epochs, config.train.lr, config.methods) == (2, 0.5, ("random", "instaaug"))
    assert config.n_train == RotationConfig.quick().n_train  # keys not in the file keep the --quick values


@pytest.mark.parametrize(
    "text, message", [("epochs = 2\nlearnig_rate = 1\n", "learnig_rate"), ('epochs = "two"\n', "'epochs' must be int")]
)
def test_cli_reports_bad_config_files(tmp_path, capsys, text, message):
    path = _write(tmp_path, "c.toml", text)
    assert main(["run", "rotation", "--config", str(path), "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_cli_reports_a_missing_config_file(tmp_path, capsys):
    assert main(["run", "rotation", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_nested_train_config_keeps_the_keys_it_does_not_name(tmp_path):
    from instaaug.experiments.contrastive import Config as ContrastiveConfig

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seeds": 1, "train": {"epochs": 5}}))
    config = load_config(path, ContrastiveConfig)
    assert config.train.epochs == 5 and config.train.batch_size == ContrastiveConfig().train.batch_size == 128
    path.write_text(json.dumps({"train": {"epochs": "five"}}))
    with pytest.raises(TypeError, match="epochs"):
        load_config(path, ContrastiveConfig)
