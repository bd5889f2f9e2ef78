"""The commands on the user's own data: ``instaaug fit``, ``instaaug tta``, ``instaaug evaluate`` and
``instaaug example-data`` (their parsers and their runs; ``instaaug.cli`` registers them).

Every mistake the user can make on the command line (a missing --data, an --out that is a file, a model that does
not fit the data, ...) ends the command with one line on stderr and exit code 2, checked before any work where it
can be, and leaves no empty output directory behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from . import distributed
from .data.photos import FOLDER_PHOTOS, write_photo_folder
from .experiments.common import apply_overrides, torch_threads
from .fit import METHODS, PRESETS, FitConfig, apply_preset, run_fit, summary
from .outputs import StaleLockWarning, check_device, check_input_path, check_output_dir, claimed_output_dir
from .train import train_overrides
from .tta_run import PRESETS as TTA_PRESETS
from .tta_run import EvaluateConfig, TTAConfig, run_evaluate, run_tta, tta_preset

#: The commands of this module.
COMMANDS = ("fit", "tta", "evaluate", "example-data")
#: The config class of each command, for `instaaug show COMMAND`.
CONFIGS: dict[str, type] = {"fit": FitConfig, "tta": TTAConfig, "evaluate": EvaluateConfig}
#: Exceptions that mean "the user asked for something that cannot be done": one line and exit code 2.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FloatingPointError)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"width\": 32}}', got {text!r}")
    return value


def _add_data_and_model(parser: argparse.ArgumentParser, *, weights_help: str) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="an image folder (one sub-folder per class), the Tiny-ImageNet"
        " layout, or an .npz with images and labels (or targets)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="resize every image to this many pixels square")
    parser.add_argument(
        "--model",
        default=None,
        help="a built-in model (small_cnn, preact_resnet18) or package.module:callable returning an nn.Module",
    )
    parser.add_argument(
        "--model-args",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="keyword arguments of the model, a JSON object",
    )
    parser.add_argument("--weights", default=None, help=weights_help)
    parser.add_argument(
        "--input-norm",
        choices=("none", "imagenet"),
        default=None,
        help="normalise [0, 1] inputs for the model (imagenet: mean/std)",
    )


def _add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (train.seed)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (train.device)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (train.epochs)")
    parser.add_argument("--batch-size", type=int, default=None, help="inputs per step (train.batch_size)")
    parser.add_argument("--quick", action="store_true", help="a short check that everything runs (1 epoch)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from --out")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="STEPS", help="also checkpoint every STEPS steps"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers for streamed data")
    parser.add_argument(
        "--cache",
        choices=("auto", "memory", "stream"),
        default=None,
        help="hold the images in memory or stream them from disk (auto: by size)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (train.KEY for the training loop); `instaaug show fit` lists them",
    )


def add_parsers(sub: Any) -> None:
    """Register ``fit``, ``tta``, ``evaluate`` and ``example-data`` on the CLI's sub-parsers."""
    fit = sub.add_parser(
        "fit",
        help="train a model and learned augmentation on your own data",
        description="Train a model and φ jointly on your data; writes the model, the augmenter,"
        " metrics and figures. Every key: `instaaug show fit`.",
    )
    _add_data_and_model(fit, weights_help="initial weights: safetensors, or a torch.save file (weights_only)")
    fit.add_argument("--val", default=None, help="validation data (default: a stratified hold-out of --data)")
    fit.add_argument(
        "--task",
        choices=("classification", "regression", "contrastive"),
        default=None,
        help="contrastive: self-supervised (SimCLR) pre-training of the model as an encoder, labels unused",
    )
    fit.add_argument(
        "--targets",
        default=None,
        help="regression targets: a CSV 'file,target,...' (folders) or the npz key (default: targets)",
    )
    fit.add_argument("--augment", default=None, help="families, comma-separated, e.g. crop,rotation,hue")
    fit.add_argument("--method", choices=METHODS, default=None)
    fit.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a paper's full-scale recipe")
    _add_run_options(fit, "runs/fit")

    tta = sub.add_parser(
        "tta",
        help="learn test-time augmentation for your frozen, pre-trained model",
        description="Learn φ against a frozen model on your data and compare no TTA, random-crop TTA"
        " and learned TTA. Every key: `instaaug show tta`.",
    )
    _add_data_and_model(tta, weights_help="the model's trained weights: safetensors, or a torch.save file")
    tta.add_argument("--val", default=None, help="validation data (default: a stratified hold-out of --data)")
    tta.add_argument("--augment", default=None, help="families φ learns, comma-separated (default: crop)")
    tta.add_argument("--preset", choices=sorted(TTA_PRESETS), default=None, help="a paper's full-scale recipe")
    _add_run_options(tta, "runs/tta")

    evaluate = sub.add_parser(
        "evaluate",
        help="apply a model (and a saved augmenter) to a dataset",
        description="Predict every image of --data; writes predictions.csv and metrics.json.",
    )
    _add_data_and_model(evaluate, weights_help="the model's trained weights")
    evaluate.add_argument("--task", choices=("classification", "regression"), default=None)
    evaluate.add_argument("--targets", default=None, help="regression targets (as for fit)")
    evaluate.add_argument("--augmenter", default=None, help="a saved augmenter folder (from fit or tta) for TTA")
    evaluate.add_argument("--views", type=int, default=None, help="views per image with --augmenter (default 10)")
    evaluate.add_argument("--view-mode", choices=("sample", "top"), default=None)
    evaluate.add_argument("--out", default="runs/evaluate", help="output directory")
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--seed", type=int, default=None)
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key; `instaaug show evaluate` lists them",
    )

    example = sub.add_parser(
        "example-data",
        help="write an image folder of real photographs to try fit and tta on",
        description="Regions of photographs that scikit-learn and scikit-image ship, one class"
        " per region, as JPEG files in DIR/<class>/.",
    )
    example.add_argument("out", help="the folder to create")
    example.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    example.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    example.add_argument("--seed", type=int, default=0)


def _train_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "device": args.device}
    return {k: v for k, v in changes.items() if v is not None}


def _config_changes(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _build_config(args: argparse.Namespace, cls: type, keys: tuple[str, ...], preset: Any = None) -> Any:
    config = cls.quick() if getattr(args, "quick", False) else cls()
    if getattr(args, "preset", None):
        config = preset(config, args.preset)
    changes = _config_changes(args, keys)
    train = dataclasses.replace(config.train, **_train_changes(args)) if hasattr(config, "train") else None
    config = dataclasses.replace(config, **changes, **({"train": train} if train is not None else {}))
    return apply_overrides(config, args.overrides)


_COMMON_KEYS = ("data", "image_size", "model", "model_args", "weights", "input_norm")


def claim_output(stack: contextlib.ExitStack, out: Path, *, resume: bool) -> None:
    """Hold ``out`` for this run (``claimed_output_dir``) on rank 0 until ``stack`` closes.

    Only rank 0 writes, so only rank 0 holds ``out``; every rank learns whether it could, so that no rank waits in a
    collective for a rank 0 that has stopped. A stale lock taken over without ``resume`` is reported as one note.
    """
    refused = None
    if distributed.is_main_process():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", StaleLockWarning)
                stack.enter_context(claimed_output_dir(out, resume=resume))
            for warning in caught:
                print(f"instaaug: note: {warning.message}", file=sys.stderr)
        except ValueError as e:
            refused = str(e)
    refused = distributed.broadcast_object(refused)
    if refused is not None:
        raise ValueError(refused)


def _run(args: argparse.Namespace, config: Any, runner: Any, out: Path) -> tuple[dict[str, Any], bool]:
    """Run ``runner(config, out)`` in the claimed output directory, with the training overrides of the flags;
    returns its metrics and whether this process is the main one (known only while the process group lives)."""
    overrides = {"resume": args.resume, "amp": args.amp, "tensorboard": args.tensorboard}
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    owned = not distributed.is_initialized()
    try:
        distributed.init_from_env()
        with contextlib.ExitStack() as stack:
            claim_output(stack, out, resume=args.resume)
            with (
                train_overrides(**{k: v for k, v in overrides.items() if v is not False}),
                torch_threads(config.threads),
            ):
                return runner(config, out), distributed.is_main_process()
    finally:
        if owned:
            distributed.shutdown()


def _check_inputs(config: Any) -> None:
    """Every input path of a config, checked before any work: it exists and is a file or a folder as expected."""
    data = Path(config.data)
    if not data.exists():
        raise ValueError(f"--data {data} does not exist")
    if getattr(config, "val", ""):
        check_input_path(config.val, kind="dir" if Path(config.val).is_dir() else "file", flag="--val")
    if config.weights:
        check_input_path(config.weights, kind="file", flag="--weights")
    if getattr(config, "targets", "") and data.is_dir():  # for an npz, targets names an array in it
        check_input_path(config.targets, kind="file", flag="--targets")
    if getattr(config, "augmenter", ""):
        check_input_path(config.augmenter, kind="dir", flag="--augmenter")


def _error(message: object) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"instaaug: error: {text}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    """Run one of the commands of this module; returns the exit code."""
    try:
        if args.command == "example-data":
            root = write_photo_folder(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
            classes = len(FOLDER_PHOTOS) * 4
            print(f"wrote {classes} classes × {args.per_class} JPEG images of {args.size} px to {root}/")
            return 0
        if args.command == "evaluate":
            keys = (*_COMMON_KEYS, "task", "targets", "augmenter", "views", "view_mode", "seed", "device")
            config = dataclasses.replace(EvaluateConfig(), **_config_changes(args, keys))
            config = apply_overrides(config, args.overrides)
            _check_inputs(config)
            check_device(config.device)
            out = check_output_dir(args.out)
            metrics = run_evaluate(config, out)
            score = metrics.get("accuracy", metrics.get("r2"))
            name = "accuracy" if "accuracy" in metrics else "R²"
            print(
                f"{name} {score:.4f} on {metrics['provenance']['data']['size']} images"
                f" ({1000 * metrics['seconds_per_image']:.2f} ms/image)"
            )
            print(f"predictions: {out}/predictions.csv  metrics: {out}/metrics.json")
            return 0
        if args.command == "fit":
            keys = (*_COMMON_KEYS, "val", "task", "targets", "augment", "method", "workers", "cache")
            config = _build_config(args, FitConfig, keys, apply_preset)
            runner = run_fit
        else:
            keys = (*_COMMON_KEYS, "val", "augment", "workers", "cache")
            config = _build_config(args, TTAConfig, keys, tta_preset)
            runner = run_tta
        _check_inputs(config)
        check_device(config.train.device)
        out = check_output_dir(args.out)
        metrics, main_process = _run(args, config, runner, out)
    except USER_ERRORS as e:
        return _error(e)
    if main_process:
        print(summary(metrics))
        print(f"model, augmenter, metrics and figures: {out}/")
    return 0
