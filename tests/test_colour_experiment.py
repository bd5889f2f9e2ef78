"""The colour experiment: its quick run end to end, its metrics and its config (the dataset: test_data_colours.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from instaaug import InstaAug
from instaaug.cli import main
from instaaug.config_files import load_config
from instaaug.data import colours
from instaaug.experiments import colour, get_experiment
from instaaug.experiments.colour import METHODS
from instaaug.experiments.common import apply_overrides

# ----------------------------------------------------------------------------------------------------------------
# The experiment


#: The quick run's training images (half of ``--quick``'s).
QUICK_TRAIN = 270


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick run over two seeds (0 and 1), on half its training images for time; the figure and the summary
    come from it too."""
    out = tmp_path_factory.mktemp("color_quick")
    code = main(["run", "colour", "--quick", "--seeds", "2", "--set", f"n_train={QUICK_TRAIN}", "--out", str(out)])
    assert code == 0
    return out


def test_quick_run_writes_metrics_for_every_method(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["experiment"] == "colour"
    assert list(metrics["methods"]) == list(METHODS)
    for method, values in metrics["methods"].items():
        assert 0.0 <= values["accuracy"] <= 1.0, method
        for group in ("shape_defined", "hue_defined"):
            assert 0.0 <= values[f"accuracy_{group}"] <= 1.0
        # The mean and the standard deviation of each metric over the two seeds, and each seed's own values.
        records = metrics["per_seed"][method]
        assert [r["seed"] for r in records] == [0, 1] and values["seeds"] == 2
        accuracies = torch.tensor([r["accuracy"] for r in records], dtype=torch.float64)
        assert values["accuracy"] == pytest.approx(float(accuracies.mean()))
        assert values["accuracy_std"] == pytest.approx(float(accuracies.std()))
    assert set(metrics["methods"]["instaaug"]) >= {"hue_width_ratio", "hue_width_ratio_std", "final_lambda_std"}
    for method in ("random", "augerino", "instaaug"):
        values = metrics["methods"][method]
        for key in ("hue_width_shape_defined", "hue_width_hue_defined", "saturation_width_hue_defined"):
            assert math.isfinite(values[key]) and values[key] > 0, (method, key)
        assert 0 < values["hue_width_shape_defined"] <= 1.0
    # Augerino and random have one range for every input.
    for method in ("random", "augerino"):
        values = metrics["methods"][method]
        assert values["hue_width_shape_defined"] == pytest.approx(values["hue_width_hue_defined"], rel=1e-5)
    assert metrics["methods"]["random"]["hue_width_hue_defined"] == pytest.approx(0.3)
    assert metrics["methods"]["random"]["hue_width_hue_defined_std"] == pytest.approx(0.0, abs=1e-6)
    config = dataclasses.replace(colour.Config.quick(), seeds=2, n_train=QUICK_TRAIN)
    assert metrics["config"] == json.loads(json.dumps(dataclasses.asdict(config)))


def test_quick_run_writes_the_figure_and_loadable_augmenters(quick_run):
    figure = quick_run / colour.FIGURE_FILE
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x = colours.make_colour_dataset(6, seed=1).images
    for method in ("augerino", "instaaug"):
        for seed in (0, 1):  # several seeds: out/METHOD/seed<S>/
            aug = InstaAug.load(quick_run / method / f"seed{seed}")
            assert aug.names == colour.TRANSFORMS
            dist = aug.eval().distribution(x)
            assert dist.low.shape == (6, 3) and bool(torch.isfinite(dist.width).all())
    assert InstaAug.load(quick_run / "augerino" / "seed0").mode == "global"


@pytest.mark.parametrize("seed", [0, 1])
def test_saved_instaaug_matches_the_reported_widths(quick_run, seed):
    # The augmenter on disk is the one measured, not an earlier state; each seed's run has its own data.
    metrics = json.loads((quick_run / "metrics.json").read_text())
    config = dataclasses.replace(colour.Config.quick(), seed=seed)
    _, test = colour.make_splits(config)
    aug = InstaAug.load(quick_run / "instaaug" / f"seed{seed}")
    low, high = colour.learned_ranges(aug, test.images)
    widths = colour.range_metrics(low, high, test.labels)
    reported = metrics["per_seed"]["instaaug"][seed]
    assert reported["seed"] == seed
    assert widths["hue_width_hue_defined"] == pytest.approx(reported["hue_width_hue_defined"], rel=1e-4)
    assert widths["hue_width_shape_defined"] == pytest.approx(reported["hue_width_shape_defined"], rel=1e-4)


def test_summary_is_a_table_of_every_method(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    text = colour.summary(metrics)
    for method in METHODS:
        assert method in text
    assert "target" in text
    assert text.count("±") >= 6 * len(METHODS) - 5  # mean ± std in every cell with a value ("none" has no widths)


def test_data_argument_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"uses a dataset it generates .*takes no --data"):
        colour.run(colour.Config.quick(), tmp_path, data="some/file.npz")
    assert not (tmp_path / "metrics.json").exists()


def test_registered_and_configurable():
    assert get_experiment("colour") is colour
    assert colour.DESCRIPTION and "\n" not in colour.DESCRIPTION
    config = apply_overrides(colour.Config(), ["methods=none,instaaug", "train.epochs=2", "entropy_range=-0.2,0.5"])
    assert config.methods == ("none", "instaaug") and config.train.epochs == 2 and config.entropy_range == (-0.2, 0.5)
    assert dataclasses.replace(colour.Config.quick(), seed=5).seed == 5
    with pytest.raises(ValueError, match="methods"):
        colour.Config(methods=("none", "autoaugment"))
    with pytest.raises(ValueError, match="entropy_range"):
        colour.Config(entropy_range=(0.0, -1.0))
    with pytest.raises(ValueError, match="n_test must be"):
        colour.Config(n_test=5)
    with pytest.raises(ValueError, match="init_half_width"):
        colour.Config(init_half_width=(0.1, 0.1))
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(colour.Config(), ["colour=1"])


def test_run_restores_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    config = dataclasses.replace(
        colour.Config.quick(),
        methods=("none",),
        n_train=27,
        n_test=18,
        train=dataclasses.replace(colour.Config.quick().train, epochs=0),
        threads=1,
        figure_per_class=1,
    )
    metrics = colour.run(config, tmp_path)
    assert torch.get_num_threads() == before
    assert set(metrics["methods"]) == {"none"}
    assert not (tmp_path / colour.FIGURE_FILE).exists()  # no method with ranges, no figure
    assert (tmp_path / "none" / "metrics.jsonl").is_file()  # one seed: out/METHOD/, as before seeds existed
    assert metrics["methods"]["none"]["seeds"] == 1 and metrics["methods"]["none"]["accuracy_std"] == 0.0
    assert "±" not in colour.summary(metrics)


def test_seeds_as_a_list_and_bad_seeds():
    config = colour.Config(seeds=[3, 1])
    assert config.seeds == (3, 1) and colour.run_dir("out", "instaaug", 1, config).parts[-2:] == ("instaaug", "seed1")
    assert colour.run_dir("out", "instaaug", 0, colour.Config()).parts[-1] == "instaaug"
    for bad in (0, (), (2, 2), "2"):
        with pytest.raises(ValueError, match="seeds must"):
            colour.Config(seeds=bad)
    with pytest.raises(ValueError, match="seeds must"):
        apply_overrides(colour.Config(), ["seeds=0"])
    with pytest.raises(ValueError, match="workers"):
        colour.Config(workers=-2)


def test_range_metrics_by_class_group():
    labels = torch.tensor([0, 1, 4, 5])
    low = torch.tensor([[-0.4, -1.0, -0.5], [-0.2, -1.0, -0.5], [-0.02, -0.5, -0.5], [-0.04, -0.5, -0.5]])
    high = torch.tensor([[0.4, 1.0, 0.5], [0.2, 1.0, 0.5], [0.02, 0.5, 0.5], [0.04, 0.5, 0.5]])
    m = colour.range_metrics(low, high, labels)
    assert m["hue_width_shape_defined"] == pytest.approx(0.6)
    assert m["hue_width_hue_defined"] == pytest.approx(0.06)
    assert m["saturation_width_shape_defined"] == pytest.approx(2.0)
    assert m["hue_width_ratio"] == pytest.approx(0.1)


def test_old_band_keys_still_set_the_band_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="'entropy_max' is deprecated.*entropy_range"):
        config = apply_overrides(colour.Config(), ["entropy_max=0.5", "train.epochs=2"])
    assert config.entropy_range == (-0.4, 0.5) and config.train.epochs == 2
    with pytest.warns(DeprecationWarning, match="entropy_min"):
        config = apply_overrides(colour.Config(), ["entropy_min=-1", "entropy_max=-0.5"])
    assert config.entropy_range == (-1.0, -0.5)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"entropy_min": -2.0, "epochs": 3}))
    with pytest.warns(DeprecationWarning, match="entropy_min"):
        loaded = load_config(path, colour.Config)
    assert loaded.entropy_range == (-2.0, 0.0) and loaded.train.epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.seed = 4  # configs are frozen: a run cannot change its own settings


def test_old_experiment_name_color_still_runs_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="now called 'colour'"):
        assert get_experiment("color") is colour
