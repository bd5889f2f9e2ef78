"""Independent training runs (one per method and seed) spread over worker processes, and their summary over seeds.

The runs of an experiment share nothing but their inputs, and the small networks of the built-in experiments
cannot keep several cores busy within one process: two single-threaded processes on a 2-core machine finish
about twice as fast as one process with two threads. Each job seeds itself, so its result does not depend on
which worker runs it or in which order (it does depend on the thread count, through float rounding).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from ..train import current_train_overrides, train_overrides

Job = TypeVar("Job")


def default_workers() -> int:
    """The cores this process may use (its CPU affinity where the platform reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _call_with_overrides(function: Callable[[Job], Any], overrides: dict[str, Any], job: Job) -> Any:
    # Context variables do not cross process boundaries: re-enter the caller's training overrides here.
    with train_overrides(**overrides):
        return function(job)


def run_jobs(
    function: Callable[[Job], Any],
    jobs: Sequence[Job],
    workers: int = 0,
    threads: int = 0,
    progress: bool | None = None,
    description: str = "runs",
) -> list[Any]:
    """``[function(job) for job in jobs]``, computed by up to ``workers`` processes; results in job order.

    Args:
        function: a module-level function (it is pickled by name for the workers).
        jobs: picklable arguments, one call each. Workers run them under the caller's ``train_overrides``.
        workers: processes to use (0: one per available core, at most one per job). With 1, or under
            ``torch.distributed`` (each rank is already a process), the jobs run here, one after another.
        threads: torch threads per worker process (0: 1 when several workers share the cores, else unchanged).
        progress: show a progress bar over finished jobs (None: only when attached to a terminal).
        description: the progress bar's label.
    """
    for name, value in (("workers", workers), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int ≥ 0, got {value!r}")
    workers = min(workers or default_workers(), len(jobs))
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    disable = None if progress is None else not progress
    if workers <= 1 or distributed:
        return [function(job) for job in tqdm(jobs, desc=description, disable=disable)]
    # spawn, not fork: forking a process that has already started torch's thread pools can deadlock.
    context = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(jobs)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads or 1,)) as pool:
        overrides = current_train_overrides()  # e.g. the CLI's --resume, --amp
        futures = {pool.submit(_call_with_overrides, function, overrides, job): i for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(jobs), desc=description, disable=disable):
            results[futures[future]] = future.result()
    return results


@dataclass(frozen=True)
class SeedRuns:
    """The runs of several named settings (methods) over seeds.

    Attributes:
        results: name → every metric's mean over the seeds and its standard deviation ``<metric>_std``
            (``summarise_seeds``), in the order of the names.
        per_seed: name → one record per seed, ``{"seed": s, **metrics}``, in seed order.
    """

    results: dict[str, dict[str, float]]
    per_seed: dict[str, list[dict[str, Any]]]


def summarise_seeds(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds of every metric, with its standard deviation as ``<metric>_std`` (0 for one seed)."""
    summary: dict[str, float] = {}
    for key in runs[0]:
        values = torch.tensor([float(r[key]) for r in runs], dtype=torch.float64)
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std()) if len(runs) > 1 else 0.0
    summary["seeds"] = len(runs)
    return summary


def training_seeds(seed: int, seeds: int | Sequence[int]) -> tuple[int, ...]:
    """The training seeds of an experiment's ``seed`` and ``seeds`` keys: an int N means seed, seed + 1, …,
    seed + N − 1 (``--set seeds=3``); a list names them (``--set seeds=0,4,7``). Raises ValueError otherwise."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be ≥ 1, got {seeds}")
        return tuple(range(seed, seed + seeds))
    if (
        isinstance(seeds, str)
        or not isinstance(seeds, Sequence)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ValueError(f"seeds must be an int ≥ 1 or a non-empty list of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {list(seeds)}")
    return tuple(seeds)


def check_seeds(config: Any) -> None:
    """Validate a config's ``seeds`` key (``training_seeds``) in its ``__post_init__``, storing a list (from
    Python) as a tuple so that the frozen config stays hashable and its JSON form stable."""
    if isinstance(config.seeds, list):
        object.__setattr__(config, "seeds", tuple(config.seeds))
    training_seeds(config.seed, config.seeds)


def run_seeds(
    function: Callable[[tuple[Any, str, int, str]], dict[str, float]],
    config: Any,
    names: Sequence[str],
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    workers: int = 0,
    threads: int = 0,
    progress: bool | None = None,
    description: str = "runs",
    cost: dict[str, float] | None = None,
) -> SeedRuns:
    """``function((config, name, seed, out))`` for every name and seed, over worker processes (see ``run_jobs``).

    The one multi-seed mechanism of the experiments: each job trains and evaluates one (name, seed) and returns its
    metrics. With several workers the runs' own progress bars are turned off (one bar over the jobs instead); jobs
    start longest first by ``cost`` (name → relative time, 1 where absent), so no worker idles at the end.
    """
    jobs = [(config, name, seed, str(out)) for seed in seeds for name in names]
    if (workers or default_workers()) > 1 and len(jobs) > 1:
        jobs = [(_quiet(config), *job[1:]) for job in jobs]
    if cost:
        jobs.sort(key=lambda job: -cost.get(job[1], 1.0))  # stable: each name's seeds stay in order
    outcomes = run_jobs(function, jobs, workers, threads, progress, description)
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for (_, name, seed, _), metrics in zip(jobs, outcomes, strict=True):
        per_seed[name].append({"seed": seed, **metrics})
    for records in per_seed.values():
        records.sort(key=lambda r: seeds.index(r["seed"]))
    results = {
        name: summarise_seeds([{k: v for k, v in r.items() if k != "seed"} for r in records])
        for name, records in per_seed.items()
    }
    return SeedRuns(results, per_seed)


def run_config_seeds(
    function: Callable[[tuple[Any, str, int, str]], dict[str, float]],
    config: Any,
    names: Sequence[str],
    out: str | os.PathLike,
    *,
    description: str,
    seeds: Sequence[int] | None = None,
    cost: dict[str, float] | None = None,
) -> SeedRuns:
    """``run_seeds`` with an experiment config's own settings: its seeds (``training_seeds(config.seed,
    config.seeds)`` unless ``seeds`` names some), ``workers``, ``threads`` and ``train.progress``."""
    if seeds is None:
        seeds = training_seeds(config.seed, config.seeds)
    return run_seeds(
        function,
        config,
        names,
        seeds,
        out,
        workers=config.workers,
        threads=config.threads,
        progress=config.train.progress,
        description=description,
        cost=cost,
    )


def run_dir(out: str | os.PathLike, name: str, seed: int, config: Any) -> Path:
    """Where the run ``name`` (a method) at ``seed`` writes its log, checkpoint and augmenter: ``out/NAME/`` when
    the config has a single seed (the layout from before seeds existed), ``out/NAME/seed<S>/`` for several."""
    single = len(training_seeds(config.seed, config.seeds)) == 1
    return Path(out) / name if single else Path(out) / name / f"seed{seed}"


def _quiet(config: Any) -> Any:
    """``config`` with its training progress bars off (``progress``, or ``train.progress`` of a nested config)."""
    fields = {f.name for f in dataclasses.fields(config)}
    if "train" in fields and dataclasses.is_dataclass(config.train):
        return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))
    if "progress" in fields:
        return dataclasses.replace(config, progress=False)
    return config


def best_setting(results: dict[str, dict[str, float]], names: Sequence[str], key: str) -> str:
    """The name among ``names`` whose mean ``key`` is highest (e.g. the best random-augmentation setting by a
    held-out metric; never choose by a test metric)."""
    return max(names, key=lambda n: results[n][key])
