"""Independent training runs (one per method and seed) spread over worker processes.

The runs of an experiment share nothing but their inputs, and the small networks of the built-in experiments
cannot keep several cores busy within one process: two single-threaded processes on a 2-core machine finish
about twice as fast as one process with two threads. Each job seeds itself, so its result does not depend on
which worker runs it or in which order (it does depend on the thread count, through float rounding).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
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
