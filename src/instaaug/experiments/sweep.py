"""Sweeps: one experiment run per point of a grid over config keys, the points in parallel worker processes.

``instaaug run crop --sweep entropy_range=0.4,0.8:0.6,1.0 --sweep lam_rate=1.005:1.02`` runs the crop experiment at
every combination (4 points here), each into ``OUT/<key>=<value>,.../`` with its own ``metrics.json`` and figures,
then writes ``OUT/metrics.json`` with every point's per-method metrics and prints one table per point. A value is
written as after ``--set KEY=`` (``0.4,0.8`` for a pair); points are separated by ``:``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..distributed import is_main_process
from . import get_experiment
from .common import apply_overrides, write_metrics
from .parallel import default_workers, run_jobs


@dataclass(frozen=True)
class SweepAxis:
    """One swept key and the values it takes, each as written after ``--set KEY=``."""

    key: str
    values: tuple[str, ...]


def parse_sweep(spec: str) -> SweepAxis:
    """``KEY=V1:V2:...`` → a ``SweepAxis``; a malformed spec raises a ValueError naming it."""
    key, eq, rest = spec.partition("=")
    values = tuple(v.strip() for v in rest.split(":"))
    if not eq or not key.strip() or not all(values):
        raise ValueError(f"--sweep expects KEY=VALUE1:VALUE2:..., got {spec!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--sweep {key.strip()} repeats a value: {spec!r}")
    return SweepAxis(key.strip(), values)


def sweep_points(axes: Sequence[SweepAxis]) -> list[dict[str, str]]:
    """Every combination of the axes' values, the last axis varying fastest: ``[{key: value, ...}, ...]``."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key is swept twice: {keys}")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(a.values for a in axes))]


def point_name(point: dict[str, str]) -> str:
    """A directory name for a point, e.g. ``entropy_range=0.4,0.8``: characters unsafe in file names become ``_``."""
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", "+".join(f"{k}={v}" for k, v in point.items()))


def point_configs(config: Any, axes: Sequence[SweepAxis], workers: int) -> list[tuple[dict[str, str], Any]]:
    """(point, config) for every point of the grid, each config validated now (before any run starts). With more
    than one worker, each point's own runs go one after another inside its worker (no nested process pools)."""
    inner = {f.name for f in dataclasses.fields(config)} & {"workers"}
    serial = ["workers=1"] if workers > 1 and inner else []
    return [
        (point, apply_overrides(config, [*serial, *(f"{k}={v}" for k, v in point.items())]))
        for point in sweep_points(axes)
    ]


def _run_point(job: tuple[str, Any, str, str | None]) -> dict[str, Any]:
    name, config, out, data = job
    return get_experiment(name).run(config, out, data=data)


def run_sweep(
    name: str,
    config: Any,
    axes: Sequence[SweepAxis],
    out_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run experiment ``name`` at every point of the grid (``workers`` processes, 0: one per core); write
    ``out_dir/metrics.json`` with ``{"sweep": {"keys", "points": [{"settings", "dir", "methods"}]}}``.

    Returns that record, with ``runs``: what each point's ``run`` returned, in the order of the points."""
    workers = min(workers or default_workers(), len(sweep_points(axes)))
    points = point_configs(config, axes, workers)
    out = Path(out_dir)
    jobs = [(name, cfg, str(out / point_name(point)), None if data is None else str(data)) for point, cfg in points]
    started = time.perf_counter()
    outcomes = run_jobs(_run_point, jobs, workers, 1 if workers > 1 else 0, progress, f"{name} sweep points")
    table = [
        {"settings": point, "dir": point_name(point), "methods": result.get("methods", {})}
        for (point, _), result in zip(points, outcomes, strict=True)
    ]
    # One flat table as well, ``POINT/METHOD → metrics``, for tools that read every experiment's ``methods``.
    flat = {f"{row['dir']}/{method}": values for row in table for method, values in row["methods"].items()}
    sweep = {"keys": [a.key for a in axes], "points": table}
    if is_main_process():
        write_metrics(out, name, flat, config, sweep=sweep, seconds=round(time.perf_counter() - started, 1))
    return {"experiment": name, "methods": flat, "sweep": sweep, "runs": outcomes}


def sweep_summary(module: ModuleType, metrics: dict[str, Any]) -> str:
    """The experiment's own table for every point of a sweep, each under a line naming its settings."""
    blocks = []
    for point, run in zip(metrics["sweep"]["points"], metrics["runs"], strict=True):
        settings = " ".join(f"{k}={v}" for k, v in point["settings"].items())
        blocks.append(f"== {settings} ==\n" + module.summary(run))
    return "\n\n".join(blocks)
