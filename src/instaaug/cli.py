"""The ``instaaug`` command: ``instaaug list`` and ``instaaug run EXPERIMENT [options]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from .experiments import EXPERIMENTS, get_experiment
from .experiments.common import apply_overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instaaug", description="Learned, input-dependent data augmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the built-in experiments")
    run = sub.add_parser("run", help="run a built-in experiment")
    run.add_argument("experiment", help="experiment name (see `instaaug list`)")
    run.add_argument("--out", default=None, help="output directory (default: runs/EXPERIMENT)")
    run.add_argument("--seed", type=int, default=None, help="random seed")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds to average over (where supported)")
    run.add_argument("--quick", action="store_true", help="a small, fast variant (seconds)")
    run.add_argument("--data", default=None, help="a data file to use instead of the built-in data")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key",
    )
    bench = sub.add_parser("bench", help="measure the cost of learned augmentation (ratios, one process)")
    bench.add_argument("--out", default="bench.json", help="where to write the results (default: bench.json)")
    bench.add_argument("--quick", action="store_true", help="check that the benchmarks run (tiny, fast)")
    bench.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in sorted(EXPERIMENTS):
            print(f"{name:12s} {get_experiment(name).DESCRIPTION}")
        return 0
    if args.command == "bench":
        from .bench import run_benchmarks

        results = run_benchmarks(args.out, quick=args.quick, device=args.device)
        print(
            f"training step vs random crops (batch {results['batch']}): LRP crops "
            f"{results['train_step_ratio_crop']:.2f}×, with a slim φ {results['train_step_ratio_crop_slim']:.2f}×"
        )
        print(f"results: {args.out}")
        return 0
    try:
        module = get_experiment(args.experiment)
        config = module.Config.quick() if args.quick else module.Config()
        if args.seed is not None:
            config = dataclasses.replace(config, seed=args.seed)
        if args.seeds is not None:
            if "seeds" not in {f.name for f in dataclasses.fields(config)}:
                raise ValueError(f"experiment {args.experiment!r} runs one seed; --seeds is not supported")
            config = dataclasses.replace(config, seeds=args.seeds)
        config = apply_overrides(config, args.overrides)
    except ValueError as e:
        print(f"instaaug: error: {e}", file=sys.stderr)
        return 2
    out_dir = args.out or f"runs/{args.experiment}"
    try:
        metrics = module.run(config, out_dir, data=args.data)
    except (ValueError, FileNotFoundError) as e:
        print(f"instaaug: error: {e}", file=sys.stderr)
        return 2
    print(module.summary(metrics))
    print(f"metrics: {out_dir}/metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
