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
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints in --out")
    run.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps"
    )
    run.add_argument("--amp", action="store_true", help="mixed precision: autocast with bfloat16 (CPU and GPU)")
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    run.add_argument("--config", default=None, metavar="FILE", help="config keys from a JSON or TOML file")
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
            "training step vs random augmentation (PreAct ResNet-18): uniform rotation + colour"
            f" {results['train_step_ratio_uniform']:.2f}× (batch {results['uniform_batch']}); LRP crops"
            f" {results['train_step_ratio_crop']:.2f}×, with a slim φ {results['train_step_ratio_crop_slim']:.2f}×"
            f" (batch {results['crop_batch']}); with the small classifier"
            f" {results['train_step_ratio_uniform_small_classifier']:.2f}× and"
            f" {results['train_step_ratio_crop_small_classifier']:.2f}×"
        )
        print(
            "augmentation throughput vs kornia (forward, forward + backward):"
            f" {results['augment_throughput_vs_kornia_64x32']:.2f}×,"
            f" {results['augment_throughput_vs_kornia_64x32_backward']:.2f}× (batch 64, 32 px);"
            f" {results['augment_throughput_vs_kornia_128x64']:.2f}×,"
            f" {results['augment_throughput_vs_kornia_128x64_backward']:.2f}× (batch 128, 64 px); colour alone"
            f" {results['colour_throughput_vs_kornia']:.2f}× ColorJitter\n"
            f"TTA wrapper vs a loop over n={results['tta_views']} views: small CNN {results['tta_auto_speedup']:.2f}×"
            f" (all views in one forward {results['tta_batched_speedup']:.2f}×), ResNet-18"
            f" {results['tta_auto_speedup_resnet18']:.2f}× ({results['tta_batched_speedup_resnet18']:.2f}×);"
            " peak memory"
            f" {results['peak_memory_ratio']:.2f}× random augmentation; channels-last weights"
            f" {results['channels_last_step_ratio_lrp']:.2f}× the step time (crop experiment)"
        )
        print(f"results: {args.out}")
        return 0
    try:
        module = get_experiment(args.experiment)
        config = module.Config.quick() if args.quick else module.Config()
        if args.config is not None:  # the file replaces defaults; --seed and --set still apply after it
            from .config_files import load_config

            try:
                config = load_config(args.config, module.Config, base=config)
            except (TypeError, FileNotFoundError) as e:
                raise ValueError(str(e)) from None
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
    # Under torchrun: one process group for the run; train() then uses DDP and only rank 0 writes and prints.
    from . import distributed
    from .train import train_overrides

    overrides = {"resume": args.resume, "amp": args.amp, "tensorboard": args.tensorboard}
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    main_process = True
    owned = not distributed.is_initialized()  # a process group made here is destroyed here
    try:
        distributed.init_from_env()
        main_process = distributed.is_main_process()
        with train_overrides(**{k: v for k, v in overrides.items() if v is not False}):
            metrics = module.run(config, out_dir, data=args.data)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(
            f"instaaug: error{f' (rank {distributed.rank()})' if distributed.is_distributed() else ''}: {e}",
            file=sys.stderr,
        )
        return 2
    finally:
        if owned:
            distributed.shutdown()
    if main_process:
        print(module.summary(metrics))
        print(f"metrics: {out_dir}/metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
