"""Runs spread over worker processes give the results of running them one after another."""

import dataclasses
import math

import pytest

from instaaug.experiments import crop
from instaaug.experiments.parallel import default_workers, run_jobs
from instaaug.train import train_overrides


def test_run_jobs_in_this_process_keeps_job_order():
    jobs = [7, 3, 9, 1, 5]
    assert run_jobs(math.factorial, jobs, workers=1, progress=False) == [math.factorial(j) for j in jobs]


def test_run_jobs_refuses_bad_counts():
    with pytest.raises(ValueError, match="workers"):
        run_jobs(math.factorial, [1], workers=-1)
    with pytest.raises(ValueError, match="threads"):
        run_jobs(math.factorial, [1], threads=1.5)
    assert default_workers() >= 1


def test_crop_runs_in_two_workers_match_one_process(tmp_path):
    config = dataclasses.replace(
        crop.Config.quick(),
        methods=("none", "instaaug"),
        n_train=48,
        n_test=16,
        pretrain_epochs=0,
        threads=1,
        progress=False,
    )
    one = crop.run(dataclasses.replace(config, workers=1), tmp_path / "one")
    with train_overrides(tensorboard=True):  # the CLI's flags reach the workers' train() calls
        two = crop.run(dataclasses.replace(config, workers=2), tmp_path / "two")
    for name in ("none", "instaaug"):
        a, b = one["methods"][name], two["methods"][name]
        assert {k: v for k, v in a.items() if "seconds" not in k} == {k: v for k, v in b.items() if "seconds" not in k}
    assert (tmp_path / "two" / "crops.png").exists()
    assert list((tmp_path / "two" / "instaaug" / "seed0" / "tensorboard").glob("events.*"))
    assert not (tmp_path / "one" / "instaaug" / "seed0" / "tensorboard").exists()
