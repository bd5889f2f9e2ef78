"""The rotation experiment: its metrics, its seeds and the quick run end to end (the sprites: test_data_sprites.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from instaaug import InstaAug
from instaaug.cli import main
from instaaug.data.sprites import builtin_sprites
from instaaug.experiments import rotation
from instaaug.experiments.common import apply_overrides
from instaaug.experiments.parallel import training_seeds


def test_coverage_and_violation_on_planted_intervals():
    half = math.pi / 2
    # The ideal interval for tilt a: full coverage, no violation.
    a = torch.tensor([0.0, 0.5, -0.7])
    cov, vio = rotation.coverage_and_violation(-half - a, half - a, a)
    assert cov == pytest.approx(1.0) and vio == pytest.approx(0.0)
    # Half of the label-preserving interval, all of it safe.
    cov, vio = rotation.coverage_and_violation(torch.tensor([0.0]), torch.tensor([half]), torch.tensor([0.0]))
    assert cov == pytest.approx(0.5) and vio == pytest.approx(0.0)
    # [0, π] at tilt 0: covers half, and the part beyond 3π/4 (a quarter of the interval) violates.
    cov, vio = rotation.coverage_and_violation(torch.tensor([0.0]), torch.tensor([math.pi]), torch.tensor([0.0]))
    assert cov == pytest.approx(0.5) and vio == pytest.approx(0.25)
    # The same interval for an image tilted by +π/4 violates more: its safe bound is 3π/4 - π/4 = π/2.
    cov, vio = rotation.coverage_and_violation(
        torch.tensor([0.0]), torch.tensor([math.pi]), torch.tensor([math.pi / 4])
    )
    assert cov == pytest.approx(0.25) and vio == pytest.approx(0.5)


def test_quick_run_over_two_seeds_writes_metrics_figure_and_loadable_augmenters(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "rotation", "--quick", "--out", str(out), "--seed", "1", "--seeds", "2"]
    assert main([*argv, "--set", "n_train=200", "--set", "n_test=100"]) == 0  # half the quick data: two seeds
    assert "±" in capsys.readouterr().out  # the summary gives mean ± std over the seeds
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "rotation"
    assert metrics["config"]["seed"] == 1 and metrics["config"]["seeds"] == 2
    assert list(metrics["methods"]) == ["none", "random", "augerino", "instaaug"]
    for name, m in metrics["methods"].items():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["seeds"] == 2 and m["accuracy_std"] >= 0
        assert ("coverage" in m) == (name in ("augerino", "instaaug"))
        records = metrics["per_seed"][name]
        assert [r["seed"] for r in records] == [1, 2]
        assert m["accuracy"] == pytest.approx((records[0]["accuracy"] + records[1]["accuracy"]) / 2)
    for name in ("augerino", "instaaug"):
        m = metrics["methods"][name]
        assert 0 <= m["coverage"] <= 1 and 0 <= m["violation"] <= 1 and "coverage_std" in m
        coverages = [r["coverage"] for r in metrics["per_seed"][name]]
        assert m["coverage_std"] == pytest.approx(float(torch.tensor(coverages, dtype=torch.float64).std()))
        for seed in (1, 2):
            aug = InstaAug.load(out / name / f"seed{seed}")
            x = torch.rand(3, 3, 32, 32)
            assert aug.distribution(x).names == ("rotation",)
            assert (out / name / f"seed{seed}" / "metrics.jsonl").is_file()
    # Each seed's run is the single run at that seed: its own data, so its own coverage.
    assert len(set(coverages)) == 2
    assert (out / "rotation_arcs.png").stat().st_size > 10_000


@pytest.mark.parametrize(("seeds", "expected"), [(1, (0,)), (3, (0, 1, 2)), ([4, 2], (4, 2)), ((7,), (7,))])
def test_seeds_are_a_count_or_a_list(seeds, expected, tmp_path):
    config = rotation.Config(seeds=seeds)
    assert training_seeds(config.seed, config.seeds) == expected
    assert config.seeds == (seeds if isinstance(seeds, int) else tuple(seeds))
    # One seed keeps the layout of runs before seeds existed: out/METHOD/.
    expected_dir = tmp_path / "instaaug" if len(expected) == 1 else tmp_path / "instaaug" / f"seed{expected[-1]}"
    assert rotation.run_dir(tmp_path, "instaaug", expected[-1], config) == expected_dir


@pytest.mark.parametrize("seeds", [0, -1, (), (1, 1), "3", True, (1.5,)])
def test_bad_seeds_are_refused_naming_the_key(seeds):
    with pytest.raises(ValueError, match="seeds must"):
        rotation.Config(seeds=seeds)


def test_seeds_and_workers_from_the_command_line():
    assert apply_overrides(rotation.Config(), ["seeds=0,4"]).seeds == (0, 4)
    assert apply_overrides(rotation.Config(), ["seeds=3", "workers=2"]).seeds == 3
    with pytest.raises(ValueError, match="seeds must"):
        apply_overrides(rotation.Config(), ["seeds=2,2"])
    with pytest.raises(ValueError, match="workers"):
        rotation.Config(workers=-1)


def test_run_reads_a_data_file_and_reports_it(tmp_path):
    path = tmp_path / "sprites.npz"
    sprites = builtin_sprites().numpy()[:, None].astype(np.float64)
    np.savez(path, mario=sprites[1], iggy=sprites[0])
    config = rotation.Config.quick()
    config = dataclasses.replace(config, methods=("none",), train=dataclasses.replace(config.train, epochs=1))
    rotation.run(config, tmp_path / "out", data=path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"] == str(path)
    assert list(metrics["methods"]) == ["none"]
    assert (tmp_path / "out" / "none" / "metrics.jsonl").is_file()  # one seed: out/METHOD/, as before seeds
    assert [r["seed"] for r in metrics["per_seed"]["none"]] == [0]
    assert metrics["methods"]["none"]["seeds"] == 1 and metrics["methods"]["none"]["accuracy_std"] == 0.0


def test_cli_rejects_unknown_experiment_and_config_key(capsys):
    assert main(["run", "no-such-experiment"]) == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err
    assert main(["run", "rotation", "--set", "no_such_key=1"]) == 2
    assert "unknown config key 'no_such_key'" in capsys.readouterr().err
    assert main(["run", "rotation", "--set", "epochs=many"]) == 2
    assert "cannot parse 'many' for config key 'epochs'" in capsys.readouterr().err
    assert main(["run", "rotation", "--set", "methods=none,bogus"]) == 2
    assert "methods must be" in capsys.readouterr().err


def test_cli_reports_a_missing_data_file(tmp_path, capsys):
    assert main(["run", "rotation", "--quick", "--out", str(tmp_path), "--data", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz does not exist" in capsys.readouterr().err


def test_cli_lists_experiments(capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "rotation" in listing and "colour" in listing
