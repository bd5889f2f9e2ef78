"""Runs spread over worker processes give the results of running them one after another."""

import dataclasses
import math

import pytest

from instaaug.experiments import crop
from instaaug.experiments.parallel import (
    best_setting,
    check_seeds,
    default_workers,
    run_jobs,
    run_seeds,
    training_seeds,
)
from instaaug.train import train_overrides


def test_run_jobs_in_this_process_keeps_job_order():
    jobs = [7, 3, 9, 1, 5]
    assert run_jobs(math.factorial, jobs, workers=1, progress=False) == [math.factorial(j) for j in jobs]


@dataclasses.dataclass(frozen=True)
class _Settings:
    offset: float = 0.0
    progress: bool | None = None


def _fake_run(job):
    """A (name, seed) run whose metrics are known: score = offset + seed (+ 10 for "b"), and who ran it quietly."""
    config, name, seed, _ = job
    return {"score": config.offset + seed + (10.0 if name == "b" else 0.0), "quiet": float(config.progress is False)}


def test_run_seeds_summarises_each_name_over_seeds_in_seed_order():
    runs = run_seeds(_fake_run, _Settings(1.0), ["a", "b"], [5, 3, 4], "unused", workers=1, cost={"b": 2.0})
    assert [r["seed"] for r in runs.per_seed["a"]] == [5, 3, 4]  # the order asked for, whatever the job order
    assert [r["score"] for r in runs.per_seed["b"]] == [16.0, 14.0, 15.0]
    assert list(runs.results) == ["a", "b"]
    assert runs.results["a"]["score"] == pytest.approx(5.0)
    assert runs.results["a"]["score_std"] == pytest.approx(1.0)  # sample std of 6, 4, 5
    assert runs.results["b"]["seeds"] == 3
    assert runs.results["a"]["quiet"] == 0.0  # one process: the runs keep their own progress setting
    assert best_setting(runs.results, ["a", "b"], "score") == "b"


def test_run_jobs_refuses_bad_counts():
    with pytest.raises(ValueError, match="workers"):
        run_jobs(math.factorial, [1], workers=-1)
    with pytest.raises(ValueError, match="threads"):
        run_jobs(math.factorial, [1], threads=1.5)
    assert default_workers() >= 1


def test_crop_runs_in_two_workers_match_one_process(tmp_path):
    quick = crop.Config.quick()
    config = dataclasses.replace(
        quick,
        methods=("none", "instaaug"),
        n_train=48,
        n_test=16,
        train=dataclasses.replace(quick.train, pretrain_epochs=0, progress=False),
        threads=1,
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


def test_training_seeds_count_list_and_errors():
    assert training_seeds(0, 3) == (0, 1, 2)
    assert training_seeds(5, 2) == (5, 6)
    assert training_seeds(0, (4, 1)) == (4, 1)
    for bad in (0, -1, True, (), (1, 1), "0,1", (1.0,)):
        with pytest.raises(ValueError, match="seeds"):
            training_seeds(0, bad)


def test_check_seeds_stores_a_list_as_a_tuple_and_refuses_bad_seeds():
    config = crop.Config.quick()
    object.__setattr__(config, "seeds", [4, 2])  # as a Python caller might give them
    check_seeds(config)
    assert config.seeds == (4, 2)
    with pytest.raises(ValueError, match="seeds must not repeat"):
        crop.Config(seeds=(1, 1))
