"""The lighting experiment: its config checks, its runs over seeds and a quick run end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug.cli import main
from instaaug.experiments import get_experiment, lighting
from instaaug.experiments.common import apply_overrides

# ----------------------------------------------------------------------------------------------------------------
# The experiment


def test_the_config_rejects_bad_values_with_clear_errors() -> None:
    base = lighting.Config.quick()
    for changes, message in (
        ({"train_lights": (9,)}, "train_lights"),
        ({"train_lights": (1, 1)}, "must not repeat"),
        ({"sweep": (0.1, 0.2)}, "triples"),
        ({"sweep": (0.0, 0.0, 0.0)}, "not all 0"),
        ({"validation": "test"}, "validation must be one of"),
        ({"photos": ("nope",)}, "photos must be names"),
        ({"seeds": ()}, "seeds"),
        ({"methods": ("none", "bogus")}, "methods"),
        ({"random_gain": 2.0}, "random_gain"),
        ({"n_test": 0}, "n_test"),
        ({"seeds": (0, 0)}, "must not repeat"),
        ({"workers": -1}, "workers"),
    ):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(base, **changes)


def test_overrides_parse_the_table4_and_sweep_keys() -> None:
    config = apply_overrides(lighting.Config.quick(), ["train_lights=1,2,4,8", "sweep=0,0.2,0.8", "seeds=0,1"])
    assert config.train_lights == (1, 2, 4, 8) and config.sweep_settings() == [(0.0, 0.2, 0.8)]
    assert config.seeds == (0, 1)
    assert get_experiment("lighting") is lighting


def test_a_quick_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["run", "lighting", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "lighting"
    assert set(metrics["methods"]) == set(lighting.DEFAULT_METHODS)
    for method, values in metrics["methods"].items():
        for key in ("accuracy", "accuracy_tta", "accuracy_easy", "accuracy_hard", "accuracy_train_light"):
            assert 0 <= values[key] <= 1 and f"{key}_std" in values
        if method != "none":
            assert any(k.endswith("_width") for k in values)
    assert "gain_r_width" in metrics["methods"]["instaaug_gain"]
    assert metrics["methods"]["none"]["accuracy_tta"] == metrics["methods"]["none"]["accuracy"]
    assert set(metrics["methods"]["random_hsv"]["chosen"]) == {"hue", "saturation", "value"}
    assert len(metrics["sweep"]) == 2 and len(metrics["per_light"]["none"]) == 46
    assert set(metrics["targets"]) >= {"instaaug_vs_random_hsv_all", "instaaug_vs_augerino"}
    assert "value_centre_vs_brightness_corr" in metrics["figure_d1"]
    for figure in (lighting.LIGHTS_FIGURE, lighting.RANGES_FIGURE):
        assert figure in metrics["figures"] and (out / figure).stat().st_size > 0
    with pytest.raises(ValueError, match="takes no --data"):
        lighting.run(lighting.Config.quick(), tmp_path / "other", data="x.npz")


@pytest.mark.slow
def test_a_quick_table4_run(tmp_path) -> None:
    config = dataclasses.replace(
        lighting.Config.quick(), train_lights=(1, 2), methods=("none", "random_hsv", "instaaug")
    )
    metrics = lighting.run(config, tmp_path)
    assert set(metrics["table4"]) == {"1", "2"}
    assert set(metrics["table4_ordering"]["instaaug_minus_random_hsv"]) == {"1", "2"}
    assert (tmp_path / lighting.TABLE4_FIGURE).exists()


def test_seeds_flag_gives_that_many_seeds():
    from instaaug.experiments.lighting import Config

    assert Config(seeds=2).seeds == (0, 1)
    with pytest.raises(ValueError, match="seeds"):
        Config(seeds=0)


def _two_seed_config(**changes) -> lighting.Config:
    """A tiny two-seed run of ``none`` and ``random_hsv`` (two sweep settings)."""
    return dataclasses.replace(
        lighting.Config.quick(), methods=("none", "random_hsv"), seeds=(0, 1), n_train=8, n_val=4, **changes
    )


def test_every_seed_is_a_job_and_random_hsv_reuses_the_sweeps_first_seed_run(tmp_path) -> None:
    metrics = lighting.run(_two_seed_config(), tmp_path)
    sweep = metrics["sweep"]
    best = max(range(len(sweep)), key=lambda i: sweep[i]["val_accuracy"])
    chosen = metrics["methods"]["random_hsv"]["chosen"]
    assert chosen == {key: sweep[best][key] for key in ("hue", "saturation", "value")}
    runs = metrics["per_seed"]["random_hsv"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[0]["val_accuracy"] == sweep[best]["val_accuracy"]
    # The chosen setting's first-seed run is the sweep's own (not trained again); the second seed is a new run.
    assert (tmp_path / "sweep" / f"sweep{best}").is_dir() and not (tmp_path / "random_hsv" / "seed0").exists()
    assert (tmp_path / "random_hsv" / "seed1").is_dir() and (tmp_path / "none" / "seed1").is_dir()
    for method, records in metrics["per_seed"].items():
        values = metrics["methods"][method]
        accuracies = [r["accuracy"] for r in records]
        assert values["seeds"] == 2 and values["per_seed_accuracy"] == accuracies
        assert values["accuracy"] == pytest.approx(sum(accuracies) / 2)
        assert values["accuracy_std"] == pytest.approx(float(torch.tensor(accuracies, dtype=torch.float64).std()))
        assert not any(key.startswith("light") for key in (*records[0], *values))  # per-light values: per_light
        # per_light is the mean over seeds of each light's accuracy, whose mean over lights is the accuracy.
        assert sum(metrics["per_light"][method]) / 46 == pytest.approx(values["accuracy"], abs=1e-5)


@pytest.mark.slow
def test_worker_processes_give_the_same_metrics(tmp_path) -> None:
    one = lighting.run(_two_seed_config(workers=1), tmp_path / "one")
    two = lighting.run(_two_seed_config(workers=2), tmp_path / "two")
    for method, values in one["methods"].items():
        same = {k: v for k, v in values.items() if "seconds" not in k}
        assert same == {k: v for k, v in two["methods"][method].items() if "seconds" not in k}
    assert one["per_light"] == two["per_light"] and one["sweep"] == two["sweep"]


def test_instaaug_local_learns_per_anchor_colour_ranges_and_is_not_in_the_default_run() -> None:
    config = lighting.Config.quick()
    aug, _ = lighting.METHODS.build("instaaug_local", config)
    assert aug.families == ("local_hue", "local_saturation", "local_value", "contrast")
    assert len(aug.stack.param_names) == 13  # 4 anchors × 3 families + contrast
    assert "instaaug_local" not in lighting.Config().methods and "instaaug_local" in lighting.METHODS
    assert apply_overrides(config, ["methods=none,instaaug_local"]).methods == ("none", "instaaug_local")
