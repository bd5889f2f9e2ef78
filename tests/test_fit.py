"""`instaaug fit`, `tta`, `evaluate` and `example-data` on the user's own data: real JPEG folders, npz archives,
regression targets, user model factories and weights."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from instaaug import Augmenter
from instaaug.bench import loader_vs_step
from instaaug.cli import main
from instaaug.data.loaders import read_images
from instaaug.data.photos import FOLDER_PHOTOS
from instaaug.experiments import get_experiment
from instaaug.experiments.common import apply_overrides, write_metrics
from instaaug.fit import FitConfig, apply_preset
from instaaug.schedules import warmup_factor
from instaaug.step import make_optimisers
from instaaug.train import TrainConfig
from instaaug.tta_run import TTAConfig
from instaaug.userdata import load_user_data
from instaaug.usermodel import build_model, load_model_weights

QUICK = ["--quick", "--image-size", "24", "--workers", "0"]


# --- the example data ---------------------------------------------------------------------------------------------


def test_example_data_command_writes_the_folder(tmp_path, capsys):
    assert main(["example-data", str(tmp_path / "mine"), "--per-class", "2", "--size", "16"]) == 0
    assert len(list((tmp_path / "mine").glob("*/*.jpg"))) == 2 * 4 * len(FOLDER_PHOTOS)
    assert main(["example-data", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- configs ------------------------------------------------------------------------------------------------------


def test_nested_overrides_and_presets():
    config = apply_overrides(FitConfig(), ["train.lr=0.5", "augment=crop,hue", 'model_args={"width": 8}'])
    assert config.train.lr == 0.5 and config.augment == ("crop", "hue") and config.model_args == {"width": 8}
    with pytest.raises(ValueError, match="in 'train': unknown config key 'lrr'"):
        apply_overrides(FitConfig(), ["train.lrr=1"])
    with pytest.raises(ValueError, match="is a group"):
        apply_overrides(FitConfig(), ["train=1"])
    preset = apply_preset(FitConfig(), "tiny-imagenet-crop")
    assert preset.model == "preact_resnet18" and preset.train.optimizer == "sgd" and preset.train.lr == 0.2
    assert preset.train.pretrain_epochs + preset.train.epochs == 150 and preset.tta_views[-1] == 50
    with pytest.raises(ValueError, match="unknown preset"):
        apply_preset(FitConfig(), "imagenet")


def test_sgd_optimiser_and_phi_warmup_schedule():
    model, aug = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimisers = make_optimisers(model, aug, lr=0.2, optimizer="sgd", momentum=0.8, weight_decay=1e-4)
    assert isinstance(optimisers["f"], torch.optim.SGD) and optimisers["f"].defaults["momentum"] == 0.8
    assert isinstance(optimisers["phi"], torch.optim.Adam)
    factors = [warmup_factor(s, 4, 12, cosine=True) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == 1.0 and factors[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert warmup_factor(10, 4, 12, cosine=False) == 1.0
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")


# --- the commands end to end ----------------------------------------------------------------------------------------


def test_fit_on_a_folder_of_jpegs_writes_model_augmenter_metrics_and_figures(photos, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "--data", str(photos), "--augment", "crop,hue", "--out", str(out), *QUICK]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tta-n4" in printed and "images/s" in printed
    for name in ("model.safetensors", "metrics.json", "metrics.jsonl", "views.png", "ranges.png", "crops.png"):
        assert (out / name).is_file(), name
    aug = Augmenter.load(out / "augmenter")
    assert aug.families == ("crop", "hue")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["val"]) == {"none", "tta-n1", "tta-n4"}
    assert 0 <= metrics["val"]["none"]["accuracy"] <= 1 and metrics["loader_images_per_second"] > 0
    prov = metrics["provenance"]
    assert prov["command"].startswith("instaaug fit --data") and prov["seed"] == 0 and prov["world_size"] == 1
    assert prov["data"]["train_size"] + prov["data"]["val_size"] == 6 * 24 and prov["torch"] == torch.__version__
    model = build_model("small_cnn", in_channels=3, outputs=24, args={})
    load_model_weights(model, str(out / "model.safetensors"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert "val_accuracy" in json.loads(lines[-1])
    # Resuming a finished run re-measures without training again.
    assert main([*argv, "--resume"]) == 0
    assert (out / "metrics.jsonl").read_text().splitlines() == lines


def test_fit_regression_on_an_npz_with_float_targets(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (96, 12, 12, 3)).astype(np.float32) * rng.uniform(0.2, 1, (96, 1, 1, 1))
    targets = images.mean(axis=(1, 2, 3))[:, None].astype(np.float32) * 4  # brightness: a learnable target
    np.savez(tmp_path / "data.npz", images=images, targets=np.concatenate([targets, -targets], 1))
    out = tmp_path / "run"
    argv = ["fit", "--data", str(tmp_path / "data.npz"), "--task", "regression", "--augment", "rotation"]
    small = ["--quick", "--image-size", "12", "--workers", "0", "--batch-size", "16", "--set", "train.epochs=6"]
    assert main([*argv, "--out", str(out), *small]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["val"]["none"]) >= {"r2", "mae", "rmse"} and metrics["targets"] == ["target0", "target1"]
    assert "train_mae" in metrics["history"][-1] and "val_r2" in metrics["history"][-1]
    # Far better than predicting the mean (R² 0): the squared-error loss trains (0.90 measured).
    assert metrics["val"]["none"]["r2"] > 0.5


def test_fit_regression_on_a_folder_with_a_targets_csv(photos, tmp_path):
    files = sorted(photos.glob("*/*.jpg"))[::3]
    rows = ["file,brightness"] + [f"{f.relative_to(photos)},{read_images([f]).mean():.4f}" for f in files]
    (tmp_path / "targets.csv").write_text("\n".join(rows))
    out = tmp_path / "run"
    argv = ["fit", "--data", str(photos), "--task", "regression", "--targets", str(tmp_path / "targets.csv")]
    assert main([*argv, "--augment", "hue", "--out", str(out), *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["data"]["train_size"] + metrics["provenance"]["data"]["val_size"] == len(files)


def test_tta_learns_views_for_a_frozen_user_model_and_evaluate_applies_them(photos, tmp_path, factory_module, capsys):
    model = build_model(f"{factory_module}:tiny", in_channels=3, outputs=24, args={})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "tta"
    argv = [
        "tta",
        "--data",
        str(photos),
        "--model",
        f"{factory_module}:tiny",
        "--weights",
        str(tmp_path / "w.safetensors"),
    ]
    assert main([*argv, "--out", str(out), *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"none", "random-n1", "random-n4", "instaaug-n1", "instaaug-n4", "instaaug-top1", "instaaug-top4"}
    assert set(metrics["val"]) == expected
    assert all(v["seconds_per_image"] > 0 for v in metrics["val"].values())
    assert metrics["history"][-1]["phase"] == "joint"
    aug = Augmenter.load(out / "augmenter")
    # The model stayed frozen: the same weights evaluate the same way.
    reloaded = build_model(f"{factory_module}:tiny", in_channels=3, outputs=24, args={})
    load_model_weights(reloaded, str(tmp_path / "w.safetensors"))
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in before.items())
    capsys.readouterr()
    ev = tmp_path / "eval"
    args = [
        "evaluate",
        "--data",
        str(photos),
        "--model",
        f"{factory_module}:tiny",
        "--weights",
        str(tmp_path / "w.safetensors"),
    ]
    assert (
        main([*args, "--image-size", "24", "--augmenter", str(out / "augmenter"), "--views", "3", "--out", str(ev)])
        == 0
    )
    assert "accuracy" in capsys.readouterr().out
    rows = (ev / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,label,prediction,probability,class" and len(rows) == 1 + 6 * 24
    assert json.loads((ev / "metrics.json").read_text())["provenance"]["data"]["size"] == 6 * 24
    assert aug.families == ("crop",)


def test_preset_runs_end_to_end_on_a_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny"
    wnids = [f"n0{i}" for i in range(3)]
    (root / "val" / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = []
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                root / "train" / wnid / "images" / f"{i}.JPEG"
            )
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"v{c}.JPEG")
        lines.append(f"v{c}.JPEG\t{wnid}\t0\t0\t1\t1")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    out = tmp_path / "run"
    small = ['model_args={"width": 4, "blocks": [1, 1, 1, 1]}', "train.pretrain_epochs=1", "train.epochs=1"]
    argv = ["fit", "--preset", "tiny-imagenet-crop", "--data", str(root), "--out", str(out), "--workers", "0"]
    assert main([*argv, *(x for s in small for x in ("--set", s)), "--set", "tta_views=2", "--batch-size", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["train"]["optimizer"] == "sgd" and config["augment_options"]["levels"] == [1, 2]
    assert config["image_size"] == 64 and metrics["provenance"]["data"]["val"] == "tiny-imagenet val/"
    aug = Augmenter.load(out / "augmenter")
    assert aug.config.global_crop and aug.config.phi_size == (64, 64)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--data", "missing-folder"], "does not exist"),
        (["fit", "--data", "{photos}", "--model", "nope:net"], "cannot import"),
        (["fit", "--data", "{photos}", "--set", "train.lrr=1"], "unknown config key"),
        (["fit", "--data", "{photos}", "--set", "train.device=cuda:7"], "cuda"),
        (["fit", "--data", "{photos}", "--method", "augerino", "--augment", "crop"], "interval families"),
        (["fit", "--data", "{photos}", "--model", "small_cnn", "--weights", "{photos}"], "folder"),
        (["fit", "--data", "{photos}/china-r0c0/0000.jpg"], "not an .npz"),
        (["fit", "--data", "{photos}", "--out", "{photos}/china-r0c0/0000.jpg"], "file"),
        (["tta", "--data", "{photos}", "--set", "train.pretrain_epochs=1"], "frozen"),
        (["evaluate", "--data", "{photos}", "--augmenter", "{photos}"], "config.json"),
    ],
)
def test_command_mistakes_give_one_line_and_exit_code_2_and_leave_no_output(photos, tmp_path, capsys, argv, message):
    argv = [a.replace("{photos}", str(photos)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main([*argv, "--quick", "--workers", "0"] if argv[0] != "evaluate" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("instaaug: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_show_lists_the_keys_of_fit_with_nested_training_keys_and_their_defaults(capsys):
    assert main(["show", "fit"]) == 0
    text = capsys.readouterr().out
    for key in ("data", "augment", "method", "model_args", "train.lr", "train.optimizer", "train.aug_lr"):
        assert f"\n  {key} = " in text, key
    assert "train.pretrain_epochs = 1  (--quick: 0)" in text  # fit's own default, not TrainConfig's
    assert main(["show", "tta"]) == 0 and "random_min_scale = 0.5" in capsys.readouterr().out


def test_every_run_records_its_provenance(tmp_path, monkeypatch):
    module = get_experiment("rotation")

    def fake_run(config, out_dir, data=None):
        write_metrics(out_dir, "rotation", {}, config)
        return {}

    monkeypatch.setattr(module, "run", fake_run)
    monkeypatch.setattr(module, "summary", lambda metrics: "")
    (tmp_path / "sprites.npz").write_bytes(b"")
    argv = ["run", "rotation", "--quick", "--seed", "3", "--data", str(tmp_path / "sprites.npz")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())["provenance"]
    assert record["command"] == "instaaug " + " ".join([*argv, "--out", str(tmp_path / "out")])
    assert record["seed"] == 3 and record["data"] == {"path": str((tmp_path / "sprites.npz").resolve())}
    assert {"instaaug", "torch", "device", "world_size", "threads", "time"} <= set(record)


def test_fit_and_tta_hold_out_the_same_images_by_default(photos):
    fit, tta = FitConfig(), TTAConfig()
    assert (fit.val_fraction, fit.train.seed) == (tta.val_fraction, tta.train.seed)
    a = load_user_data(str(photos), val_fraction=fit.val_fraction, seed=0, image_size=8)
    b = load_user_data(str(photos), val_fraction=tta.val_fraction, seed=0, image_size=8)
    assert torch.equal(a.val.x, b.val.x)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fit_under_torchrun_streams_with_a_distributed_sampler(photos, tmp_path):
    """`torchrun --nproc_per_node=2 -m instaaug fit --cache stream`: DDP, each rank reads its share of the files
    through a DistributedSampler, rank 0 alone writes and prints."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun is not None
    out = tmp_path / "run"
    args = ["fit", "--data", str(photos), "--cache", "stream", "--out", str(out), *QUICK, "--batch-size", "32"]
    proc = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_port", str(_free_port()), "-m", "instaaug", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model, augmenter, metrics and figures") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["world_size"] == 2 and metrics["provenance"]["data"]["streamed"] is True
    assert (out / "model.safetensors").is_file() and not (out / ".instaaug.lock").exists()


def test_loader_vs_step_measures_both_rates(photos):
    rates = loader_vs_step(photos, image_size=16, batch=8, workers=(0, 1), batches=3)
    assert set(rates) == {"loader_w0", "loader_w1", "step_none", "step_instaaug"}
    assert all(v > 0 for v in rates.values())


def test_imagenet_tta_preset_runs_end_to_end_on_a_tiny_folder(photos, tmp_path, factory_module):
    """The preset as given (ImageNet normalisation, LRP at φ 64 px over two levels and the whole image), at a
    small image size and one epoch."""
    model = build_model(f"{factory_module}:tiny", in_channels=3, outputs=24, args={})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    out = tmp_path / "tta"
    argv = ["tta", "--preset", "imagenet-tta", "--data", str(photos), "--model", f"{factory_module}:tiny"]
    more = ["--set", "image_size=32", "--epochs", "1", "--set", "tta_views=2", "--set", "top_views=2"]
    assert main([*argv, "--weights", str(tmp_path / "w.safetensors"), "--out", str(out), "--workers", "0", *more]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["input_norm"] == "imagenet" and metrics["config"]["train"]["batch_size"] == 256
    assert set(metrics["val"]) == {"none", "random-n2", "instaaug-n2", "instaaug-top2"}
    aug = Augmenter.load(out / "augmenter")
    assert aug.config.levels == (1, 2) and aug.config.global_crop
