"""The rotation experiment: its data, its metrics, and the quick run end to end."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from instaaug import InstaAug
from instaaug.cli import main
from instaaug.data.sprites import builtin_sprites, load_mario_iggy, rotated_sprites
from instaaug.experiments import rotation
from instaaug.experiments.common import apply_overrides
from instaaug.experiments.parallel import training_seeds
from instaaug.transforms import TransformStack


def test_builtin_sprites_are_distinct_and_asymmetric():
    sprites = builtin_sprites()
    assert sprites.shape == (2, 3, 32, 32) and sprites.dtype == torch.float32
    assert sprites.min() >= 0 and sprites.max() <= 1
    assert (sprites[0] - sprites[1]).abs().mean() > 0.1
    for s in sprites:  # upside down and mirrored differ from the original, so orientation is learnable
        assert (s - s.flip(-2)).abs().mean() > 0.05
        assert (s - s.flip(-1)).abs().mean() > 0.05


def test_rotated_sprites_labels_angles_and_orientation():
    sprites = builtin_sprites()
    x, y, angle = rotated_sprites(sprites, 400, torch.Generator().manual_seed(0))
    assert x.shape == (400, 3, 32, 32) and y.shape == (400,) and angle.shape == (400,)
    assert torch.bincount(y, minlength=4).tolist() == [100, 100, 100, 100]
    assert angle.abs().max() <= math.pi / 4
    # Rotating each image back by its full angle recovers its class's sprite (upright or upside down).
    back = TransformStack(("rotation",))(x, -(angle + math.pi * (y % 2).float())[:, None])
    centre = slice(10, 22)  # away from corners lost to the rotations
    err = (back - sprites[y // 2])[..., centre, centre].abs().mean(dim=(1, 2, 3))
    other = (back - sprites[1 - y // 2])[..., centre, centre].abs().mean(dim=(1, 2, 3))
    assert (err < other).all()
    assert err.mean() < 0.12


def test_rotated_sprites_are_reproducible():
    a = rotated_sprites(builtin_sprites(), 16, torch.Generator().manual_seed(3))
    b = rotated_sprites(builtin_sprites(), 16, torch.Generator().manual_seed(3))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


def test_load_mario_iggy_reads_the_public_format(tmp_path):
    mario = np.random.default_rng(0).random((1, 3, 32, 32))
    iggy = np.random.default_rng(1).random((1, 3, 32, 32))
    path = tmp_path / "sprites.npz"
    np.savez(path, mario=mario, iggy=iggy)
    sprites = load_mario_iggy(path)
    assert sprites.shape == (2, 3, 32, 32) and sprites.dtype == torch.float32
    assert np.allclose(sprites[0].numpy(), mario[0]) and np.allclose(sprites[1].numpy(), iggy[0])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mario": np.zeros((1, 3, 32, 32))}, "lacks key"),
        ({"mario": np.zeros((1, 1, 32, 32)), "iggy": np.zeros((1, 1, 32, 32))}, "shape"),
        ({"mario": np.full((1, 3, 32, 32), 2.0), "iggy": np.zeros((1, 3, 32, 32))}, r"\[0, 1\]"),
        ({"mario": np.zeros((1, 3, 32, 32), np.uint8), "iggy": np.zeros((1, 3, 32, 32))}, "floats"),
    ],
)
def test_load_mario_iggy_rejects_bad_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_mario_iggy(path)


def test_load_mario_iggy_rejects_missing_and_non_npz_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mario_iggy(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="npz"):
        load_mario_iggy(junk)


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
