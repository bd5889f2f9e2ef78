"""Sweeps over config keys: parsing, the grid, and one end-to-end sweep of the crop experiment (which also checks
the fixed-λ ablation of the paper's Figure E.1)."""

from __future__ import annotations

import json

import pytest

from instaaug.cli import main
from instaaug.experiments import get_experiment
from instaaug.experiments.sweep import SweepAxis, parse_sweep, point_configs, point_name, sweep_points


def test_parse_sweep_splits_points_on_colons_and_keeps_pairs_whole():
    axis = parse_sweep("entropy_range=0.4,0.8:0.6,1.0:1.0,1.5")
    assert axis == SweepAxis("entropy_range", ("0.4,0.8", "0.6,1.0", "1.0,1.5"))


@pytest.mark.parametrize("spec", ["entropy_range", "=1:2", "lr=", "lr=0.1::0.2", "lr=0.1:0.1"])
def test_parse_sweep_refuses_malformed_specs(spec):
    with pytest.raises(ValueError, match="--sweep"):
        parse_sweep(spec)


def test_grid_is_the_product_last_axis_fastest_and_keys_are_unique():
    points = sweep_points([SweepAxis("a", ("1", "2")), SweepAxis("b", ("x", "y", "z"))])
    assert points == [{"a": a, "b": b} for a in "12" for b in "xyz"]
    with pytest.raises(ValueError, match="swept twice"):
        sweep_points([SweepAxis("a", ("1",)), SweepAxis("a", ("2",))])
    assert point_name({"entropy_range": "0.4,0.8", "x": "a/b"}) == "entropy_range=0.4,0.8+x=a_b"


def test_point_configs_apply_each_value_and_run_points_serially_inside_parallel_workers():
    config = get_experiment("crop").Config.quick()
    points = point_configs(config, [parse_sweep("entropy_range=0.4,0.8:1.0,1.5")], workers=2)
    assert [c.entropy_range for _, c in points] == [(0.4, 0.8), (1.0, 1.5)]
    assert all(c.workers == 1 for _, c in points)  # no process pool inside a pool
    with pytest.raises(ValueError, match="fixed_lam"):
        point_configs(config, [parse_sweep("fixed_lam=0.1:-1")], workers=1)


def test_cli_refuses_a_bad_sweep_before_any_work(tmp_path, capsys):
    for argv, match in (
        (["--sweep", "no_such_key=1:2"], "unknown config key 'no_such_key'"),
        (["--sweep", "train.epochs"], "--sweep expects KEY=VALUE1:VALUE2"),
        (["--sweep", "train.epochs=1:x"], "cannot parse 'x'"),
        (["--sweep", "train.epochs=1:2", "--sweep-workers", "-1"], "--sweep-workers must be ≥ 0"),
    ):
        capsys.readouterr()
        assert main(["run", "crop", "--quick", "--out", str(tmp_path / "out"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "out").exists()


def test_crop_sweep_over_fixed_lambda_writes_every_point_and_one_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["run", "crop", "--quick", "--out", str(out), "--set", "methods=instaaug", "--set", "random_min_scales=0.85"]
    assert main([*argv, "--sweep", "fixed_lam=0:0.5", "--sweep-workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "== fixed_lam=0 ==" in printed and "== fixed_lam=0.5 ==" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sweep"]["keys"] == ["fixed_lam"]
    assert [p["settings"] for p in metrics["sweep"]["points"]] == [{"fixed_lam": "0"}, {"fixed_lam": "0.5"}]
    assert set(metrics["methods"]) == {"fixed_lam=0/instaaug", "fixed_lam=0.5/instaaug"}
    for point in metrics["sweep"]["points"]:
        own = json.loads((out / point["dir"] / "metrics.json").read_text())
        assert own["methods"] == point["methods"]  # the table holds what each point's own run wrote
    # λ is the controller's (moving from lam_init) at 0 and exactly the fixed value at 0.5.
    joint = [
        [json.loads(line) for line in (out / d / "instaaug" / "seed0" / "metrics.jsonl").read_text().splitlines()][-1]
        for d in ("fixed_lam=0", "fixed_lam=0.5")
    ]
    assert joint[1]["lam"] == 0.5
    assert joint[0]["lam"] != 0.5 and joint[0]["lam"] >= get_experiment("crop").Config().lam_min
