"""The ``instaaug`` command: ``instaaug list``, ``instaaug show EXPERIMENT``, ``instaaug run EXPERIMENT [options]``
and ``instaaug bench``.

A mistake on the command line (an --out that cannot be written or is in use, a missing --data, a device this
machine lacks, an unknown key) is reported before any work starts, as one line ``instaaug: error: ...`` on stderr,
with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from . import distributed
from .commands import COMMANDS as USER_DATA_COMMANDS
from .commands import CONFIGS as USER_DATA_CONFIGS
from .commands import add_parsers as add_user_data_parsers
from .commands import claim_output
from .commands import run_command as run_user_data_command
from .config_files import config_help
from .experiments import EXPERIMENTS, get_experiment
from .experiments.common import apply_overrides, config_device
from .experiments.sweep import parse_sweep, point_configs, run_sweep, sweep_summary
from .outputs import (
    check_device,
    check_input_path,
    check_output_dir,
    check_output_file,
)
from .provenance import command_line

#: What ``--data`` is for the experiments that read it; the others generate their data and refuse ``--data``
#: themselves, with a message of their own, before they write anything.
DATA_KINDS: dict[str, Literal["file", "dir"]] = {"rotation": "file"}

#: Where --help points for the config keys.
SHOW_HINT = "`instaaug show EXPERIMENT` lists an experiment's config keys with their defaults and meanings"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instaaug", description="Learned, input-dependent data augmentation.", epilog=f"{SHOW_HINT}."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the built-in experiments", epilog=f"{SHOW_HINT}.")
    show = sub.add_parser(
        "show",
        help="list an experiment's config keys, their defaults and meanings",
        description="List every config key of an experiment (for `instaaug run EXPERIMENT --set KEY=VALUE` or a"
        " --config file) with its default, its default under --quick where that differs, and what it means.",
    )
    show.add_argument("experiment", help="experiment name (see `instaaug list`)")
    run = sub.add_parser(
        "run",
        help="run a built-in experiment",
        description="Run a built-in experiment; its results go to --out. Only one run at a time may use an --out"
        " (a lock file .instaaug.lock in it says which process has it).",
        epilog=f"{SHOW_HINT}.",
    )
    run.add_argument("experiment", help="experiment name (see `instaaug list`)")
    run.add_argument(
        "--out", default=None, help="output directory, created if needed (default: runs/EXPERIMENT); one run at a time"
    )
    run.add_argument("--seed", type=int, default=None, help="random seed")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds to average over")
    run.add_argument("--quick", action="store_true", help="a small, fast variant (seconds)")
    run.add_argument(
        "--data",
        default=None,
        help=f"a data file to use instead of the built-in data (experiments that read one: {', '.join(DATA_KINDS)})",
    )
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints in --out")
    run.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps"
    )
    run.add_argument("--amp", action="store_true", help="mixed precision: autocast with bfloat16 (CPU and GPU)")
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    run.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="config keys from a JSON or TOML file (keys: `instaaug show EXPERIMENT`)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (keys, defaults and meanings: `instaaug show EXPERIMENT`)",
    )
    run.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="KEY=V1:V2:...",
        help="run once per value of KEY (a grid over several --sweep), each into OUT/KEY=VALUE/; the table of all"
        " points goes to OUT/metrics.json",
    )
    run.add_argument(
        "--sweep-workers",
        type=int,
        default=0,
        metavar="N",
        help="processes running sweep points side by side (default 0: one per core)",
    )
    bench = sub.add_parser("bench", help="measure the cost of learned augmentation (ratios, one process)")
    bench.add_argument(
        "--out", default="bench.json", help="the JSON file to write the results to (default: bench.json)"
    )
    bench.add_argument("--quick", action="store_true", help="check that the benchmarks run (tiny, fast)")
    bench.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_user_data_parsers(sub)
    return parser


def _error(message: str, rank_tag: str = "") -> int:
    """Report a mistake as one line on stderr; returns the exit code 2."""
    print(f"instaaug: error{rank_tag}: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _format_value(value: Any) -> str:
    """A config value as one would write it after ``--set KEY=``."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, tuple | list):
        return ",".join(_format_value(v) for v in value) if value else "()"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def _config_lines(
    config_cls: type, quick: Any, prefix: str = "", defaults: Any = None
) -> list[tuple[str, Any, Any, str]]:
    """(key, default, --quick value, meaning) of every key of a config class; nested configs (``train``) as
    ``train.KEY``, with the defaults the outer config gives them."""
    rows = []
    defaults = config_cls() if defaults is None else defaults
    for key, default, meaning in config_help(config_cls):
        quick_value = getattr(quick, key, default) if quick is not None else default
        if dataclasses.is_dataclass(default):
            nested = getattr(defaults, key)
            rows += _config_lines(type(nested), quick_value, f"{prefix}{key}.", nested)
            continue
        rows.append((f"{prefix}{key}", getattr(defaults, key, default), quick_value, meaning))
    return rows


def _show(name: str) -> int:
    """Print every config key of experiment or command ``name`` with its default and meaning."""
    if name in USER_DATA_CONFIGS:
        config_cls = USER_DATA_CONFIGS[name]
        print(f"{name}: `instaaug {name} --help` for the flags; every key below is also `--set KEY=VALUE`")
    else:
        module = get_experiment(name)
        config_cls = module.Config
        print(f"{name}: {module.DESCRIPTION}")
        registry = getattr(module, "METHODS", None)
        if hasattr(registry, "describe"):  # a MethodRegistry
            print("methods (`--set methods=A,B`), in reporting order:")
            width = max(len(method) for method in registry)
            for method, summary in registry.describe():
                print(f"  {method:{width}s}  {summary}")
        print(f"config keys (`instaaug run {name} --set KEY=VALUE`, or a --config file), with their defaults:")
    quick = config_cls.quick() if hasattr(config_cls, "quick") else None
    for key, default, quick_value, meaning in _config_lines(config_cls, quick):
        line = f"  {key} = {_format_value(default)}"
        if quick_value != default:
            line += f"  (--quick: {_format_value(quick_value)})"
        print(line)
        if meaning:
            print(textwrap.fill(meaning, width=100, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return 0


def _device_flag(args: argparse.Namespace) -> str:
    """How the run's ``device`` key (or ``train.device``, or its old flat name) was given, to name it in an error."""
    for item in reversed(args.overrides):
        key = item.split("=", 1)[0].strip()
        if key in ("device", "train.device"):
            return f"--set {key}"
    return f"{args.config}: device" if args.config is not None else "device"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command in USER_DATA_COMMANDS:
        with command_line(["instaaug", *argv]):
            return run_user_data_command(args)
    if args.command == "list":
        width = max(map(len, EXPERIMENTS))
        for name in sorted(EXPERIMENTS):
            print(f"{name:{width}s}  {get_experiment(name).DESCRIPTION}")
        return 0
    if args.command == "show":
        try:
            return _show(args.experiment)
        except ValueError as e:
            return _error(str(e))
    if args.command == "bench":
        from .bench import run_benchmarks

        try:  # before the benchmarks, which run for minutes
            check_output_file(args.out)
            check_device(args.device, flag="--device")
        except ValueError as e:
            return _error(str(e))
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
            "step with a mixture of intervals vs uniform intervals"
            f" {results['train_step_ratio_mixture_vs_uniform']:.2f}×, with a conditional flow"
            f" {results['train_step_ratio_flow_vs_uniform']:.2f}× (small classifier)\n"
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
        if args.seeds is not None:  # every experiment has ``seeds`` (tests/test_experiments_common.py)
            config = dataclasses.replace(config, seeds=args.seeds)
        config = apply_overrides(config, args.overrides)
        axes = [parse_sweep(spec) for spec in args.sweeps]
        if axes:
            if args.sweep_workers < 0:
                raise ValueError(f"--sweep-workers must be ≥ 0, got {args.sweep_workers}")
            point_configs(config, axes, args.sweep_workers)  # every point's settings checked before any run
        # Everything the run will need from outside, checked before it starts rather than minutes into it.
        out_dir = check_output_dir(args.out or f"runs/{args.experiment}")
        device = config_device(config)
        if device is not None:
            check_device(device, flag=_device_flag(args))
        if args.data is not None and args.experiment in DATA_KINDS:
            check_input_path(args.data, kind=DATA_KINDS[args.experiment])
    except ValueError as e:
        return _error(str(e))
    # Under torchrun: one process group for the run; train() then uses DDP and only rank 0 writes and prints.
    from .train import train_overrides

    overrides = {"resume": args.resume, "amp": args.amp, "tensorboard": args.tensorboard}
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    main_process = True
    owned = not distributed.is_initialized()  # a process group made here is destroyed here
    try:
        distributed.init_from_env()
        main_process = distributed.is_main_process()
        with contextlib.ExitStack() as claim:
            claim_output(claim, out_dir, resume=args.resume)
            data = {"path": str(Path(args.data).resolve())} if args.data is not None else None
            with (
                train_overrides(**{k: v for k, v in overrides.items() if v is not False}),
                command_line(["instaaug", *argv], data=data),
            ):
                if axes:
                    metrics = run_sweep(
                        args.experiment, config, axes, out_dir, data=args.data, workers=args.sweep_workers
                    )
                else:
                    metrics = module.run(config, out_dir, data=args.data)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        return _error(str(e), f" (rank {distributed.rank()})" if distributed.is_distributed() else "")
    finally:
        if owned:
            distributed.shutdown()
    if main_process:
        print(sweep_summary(module, metrics) if axes else module.summary(metrics))
        print(f"metrics: {out_dir}/metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
