"""The multimodal experiment: densities against label-preserving arcs, canonicalisation and `instaaug run multimodal`
(the symmetric shapes themselves: test_data_symmetric.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from instaaug import InstaAug
from instaaug.cli import main
from instaaug.config_files import load_config
from instaaug.data.symmetric import TRAIN_SHAPES, draw, invariance_mask, symmetric_shapes
from instaaug.distributions import UniformMixture
from instaaug.distributions.mixture import symmetric_centres
from instaaug.experiments.common import apply_overrides
from instaaug.experiments.multimodal import (
    METHODS,
    AnnealedBand,
    Config,
    coverage_violation,
    fit_by_sampling,
    oracle_views,
    run_dir,
)
from instaaug.transforms import TransformStack


def test_coverage_and_violation_of_exact_densities():
    data = symmetric_shapes(60, TRAIN_SHAPES, seed=2)
    angles = (torch.arange(720) + 0.5) / 720 * 2 * math.pi - math.pi
    truth = invariance_mask(angles, data.order, data.tilt).float()
    exact = truth / (truth.sum(1, keepdim=True) * 2 * math.pi / 720)  # uniform on the true set
    scores = coverage_violation(exact, data, angles, 0.25)
    assert scores["coverage_all"] == pytest.approx(1.0) and scores["violation_all"] == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full_like(exact, 1 / (2 * math.pi))  # the whole circle: half the mass outside
    scores = coverage_violation(uniform, data, angles, 0.25)
    assert scores["coverage_all"] == pytest.approx(1.0) and scores["violation_all"] == pytest.approx(0.5, abs=1e-3)


def test_canonicalise_applies_the_mode_of_the_interval_part():
    aug = InstaAug(("crop", "rotation"), mode="global", in_channels=1, phi_size=(32, 32))
    with torch.no_grad():
        aug.net.output.copy_(torch.tensor([-1.5, 0.5]))  # an asymmetric rotation interval
    x = draw(torch.tensor([0, 1]), torch.tensor([0.2, -0.4]), torch.tensor([0.9, 0.9]))
    with torch.no_grad():
        dist = aug.eval().distribution(x)
        centre = dist.part(type(dist.parts[1])).mode()
    assert float(centre.abs().min()) > 0.05
    params = torch.zeros(2, 5)
    params[:, 4] = centre[:, 0]
    torch.testing.assert_close(aug.canonicalise(x), aug.stack(x, params))
    with pytest.raises(ValueError, match="interval families"):
        InstaAug(("crop",), in_channels=1).canonicalise(x)


def test_multimodal_experiment_quick_run(tmp_path, capsys):
    out = tmp_path / "mm"
    assert main(["run", "multimodal", "--quick", "--out", str(out), "--set", "methods=none,uniform,mixture"]) == 0
    text = capsys.readouterr().out
    assert "cov sym" in text and "upright-only" in text
    metrics = json.loads((out / "metrics.json").read_text())
    for method in ("uniform", "mixture"):
        m = metrics["methods"][method]
        assert {"coverage_sym", "violation_sym", "heldout_coverage_sym", "canonical_accuracy"} <= set(m)
        assert 0 <= m["coverage_sym"] <= 1 and 0 <= m["violation_sym"] <= 1
        assert (out / method / "weights.safetensors").is_file()
    assert "coverage_sym" not in metrics["methods"]["none"]
    assert (out / "multimodal_densities.png").is_file()
    assert InstaAug.load(out / "mixture").config.distribution == "mixture"
    # One seed: the layout of runs before seeds existed, and every metric with a zero deviation.
    mixture = metrics["methods"]["mixture"]
    assert mixture["seeds"] == 1 and mixture["coverage_sym_std"] == 0.0
    assert metrics["per_seed"]["mixture"][0]["canonical_accuracy"] == mixture["canonical_accuracy"]
    assert not (out / "frozen_classifier").exists()


def test_oracle_views_stay_inside_the_label_preserving_arcs():
    data = symmetric_shapes(60, TRAIN_SHAPES, seed=4)
    images, labels, angles = oracle_views(data, copies=3, seed=0)
    assert images.shape == (180, 1, 32, 32) and torch.equal(labels, data.labels.repeat(3))
    order, tilt = data.order.repeat(3), data.tilt.repeat(3)
    period = 2 * math.pi / order
    offset = torch.remainder(tilt + angles + period / 2, period) - period / 2
    assert bool((offset.abs() < 0.9 * period / 4 + 1e-5).all())  # every view's angle keeps its label, with a margin
    for arc in (1, 2, 3):  # every arc of the symmetric classes is used
        period = 2 * math.pi / arc
        k = torch.round(torch.remainder(angles + tilt, 2 * math.pi) / period) % arc
        assert set(k[order == arc].long().tolist()) == set(range(arc))
    torch.testing.assert_close(images, TransformStack(("rotation",))(data.images.repeat(3, 1, 1, 1), angles[:, None]))


def test_frozen_variant_trains_phi_alone_for_every_seed_of_a_list(tmp_path, capsys):
    out = tmp_path / "mm"
    config = tmp_path / "seeds.json"
    config.write_text(json.dumps({"seeds": [0, 3]}))  # the list form of seeds, from a config file
    argv = ["run", "multimodal", "--quick", "--out", str(out), "--config", str(config), "--set", "frozen=true"]
    argv += ["--set", "oracle_epochs=2", "--set", "n_train=192"]  # for time: what is tested is the plumbing
    assert main([*argv, "--set", "methods=none,mixture", "--set", "mixture_init=symmetric"]) == 0
    assert "±" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["frozen"] is True and metrics["config"]["seeds"] == [0, 3]
    mixture = metrics["methods"]["mixture"]
    assert mixture["seeds"] == 2 and {"coverage_sym", "coverage_sym_std", "canonical_accuracy_std"} <= set(mixture)
    records = metrics["per_seed"]["mixture"]
    assert [r["seed"] for r in records] == [0, 3] and all("canonical_accuracy" in r for r in records)
    tilts = torch.tensor([r["canonical_residual_tilt"] for r in records], dtype=torch.float64)
    assert mixture["canonical_residual_tilt"] == pytest.approx(float(tilts.mean()))
    assert mixture["canonical_residual_tilt_std"] == pytest.approx(float(tilts.std()))
    assert [r["seed"] for r in metrics["alignment_raw_per_seed"]] == [0, 3]
    assert metrics["alignment_raw"]["seeds"] == 2 and "canonical_accuracy_std" in metrics["alignment_raw"]
    for seed in (0, 3):
        assert (out / "frozen_classifier" / f"seed{seed}" / "weights.safetensors").is_file()
        history = (out / "mixture" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        assert all(json.loads(line)["phase"] == "joint" for line in history)  # no pre-training of a frozen model
        assert InstaAug.load(out / "mixture" / f"seed{seed}").config.distribution == "mixture"
    assert (out / "multimodal_densities.png").is_file()


def test_training_keys_are_nested_and_the_old_flat_ones_still_work(tmp_path):
    config = apply_overrides(Config(), ["train.epochs=5", "train.lr=0.01"])
    assert (config.train.epochs, config.train.lr, config.train.aug_lr_schedule) == (5, 0.01, "cosine")
    for old in ("epochs=4", "pretrain_epochs=2", "batch_size=32", "lr=0.1", "aug_lr=0.2", "device=cpu"):
        key, value = old.split("=")
        with pytest.warns(DeprecationWarning, match=f"'{key}' is deprecated.*train.{key}"):
            config = apply_overrides(Config(), [old])
        assert str(getattr(config.train, key)) == value
    with pytest.warns(DeprecationWarning, match="aug_lr_schedule"):
        assert apply_overrides(Config(), ["aug_lr_schedule=constant"]).train.aug_lr_schedule == "constant"
    with pytest.raises(ValueError, match="unknown config key 'weight_decay'"):
        apply_overrides(Config(), ["weight_decay=0.1"])  # never a flat key of this experiment: no alias
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"epochs": 3, "batch_size": 16}))
    with pytest.warns(DeprecationWarning, match="'epochs' is deprecated"):
        loaded = load_config(path, Config)
    assert (loaded.train.epochs, loaded.train.batch_size) == (3, 16)
    with pytest.raises(TypeError, match="train must be a TrainConfig"):
        Config(train={"epochs": 3})


def test_seeds_and_workers_are_checked():
    assert Config(seeds=[2, 5]).seeds == (2, 5)
    assert run_dir("out", "flow", 5, Config(seeds=[2, 5])).parts[-2:] == ("flow", "seed5")
    assert run_dir("out", "flow", 0, Config()).parts[-1] == "flow"
    for bad in (0, (), (1, 1), "2", 1.5):
        with pytest.raises(ValueError, match="seeds must"):
            Config(seeds=bad)
    with pytest.raises(ValueError, match="workers"):
        Config(workers=-1)


def test_symmetric_mixture_init_starts_every_component_at_a_candidate(tmp_path):
    """With ``mixture_init="symmetric"`` the untrained augmenter's boxes sit at 0, ±π/3, ±2π/3 and both sides of
    ±π for every input, with equal weights, and they survive saving and loading."""
    config = dataclasses.replace(Config.quick(), mixture_init="symmetric", init_width=0.3)
    aug, _ = METHODS.build("mixture", config)
    x = symmetric_shapes(5, TRAIN_SHAPES, seed=3).images
    with torch.no_grad():
        dist = aug.eval().distribution(x)
    assert isinstance(dist, UniformMixture)
    centres = symmetric_centres(-math.pi, math.pi, 6, 0.3).float()
    torch.testing.assert_close(((dist.low + dist.high) / 2)[..., 0], centres.expand(5, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(dist.weights, torch.full((5, 7), 1 / 7), atol=1e-6, rtol=0)
    aug.save(tmp_path / "mix")
    with torch.no_grad():
        loaded = InstaAug.load(tmp_path / "mix").eval().distribution(x)
    assert isinstance(loaded, UniformMixture)
    torch.testing.assert_close(loaded.low, dist.low)
    with pytest.raises(ValueError, match="mixture_init"):
        Config(mixture_init="random")
    with pytest.raises(ValueError, match="needs frozen=true"):
        Config(flow_fit="sampling")  # no fixed classifier to fit to


def test_annealed_band_moves_linearly_then_holds():
    controller = AnnealedBand((1.6, 1.8), (1.0, 1.2), anneal_steps=10, lam_init=0.1, rate=1.1, horizon=0)
    bands = []
    for _ in range(15):
        controller.update(torch.tensor(1.1))
        bands.append((controller.h_min, controller.h_max))
    assert bands[0] == pytest.approx((1.6, 1.8)) and bands[5] == pytest.approx((1.3, 1.5))
    assert all(b == pytest.approx((1.0, 1.2)) for b in bands[10:])
    # The entropy 1.1 is below the band at first (λ rises), inside it at the end (λ holds).
    lam = []
    for _ in range(3):
        lam.append(float(controller.update(torch.tensor(1.1))))
    assert lam[0] == lam[-1] and lam[0] > 0.1


def test_fit_by_sampling_finds_every_planted_arc():
    """Planted Gibbs target: the "classifier's" loss is 0 on two arcs, [−π/4, π/4] and the one across ±π, and 20
    elsewhere. Maximum likelihood (forward KL) must put the flow's mass on both arcs, not on one."""
    quick = Config.quick()
    train = dataclasses.replace(quick.train, epochs=40, batch_size=32, aug_lr=1e-2)
    config = dataclasses.replace(quick, frozen=True, flow_fit="sampling", train=train, flow_init_width=3.0)
    torch.manual_seed(0)
    aug, _ = METHODS.build("flow", config)
    images = symmetric_shapes(32, TRAIN_SHAPES, seed=5).images
    grid = torch.arange(36) * (2 * math.pi / 36) - math.pi
    on_arc = (grid.abs() <= math.pi / 4) | (grid.abs() >= 3 * math.pi / 4)
    losses = torch.where(on_arc, 0.0, 20.0).expand(32, -1)
    history = fit_by_sampling(aug, images, losses, config)
    assert history[-1]["fit_loss"] < history[0]["fit_loss"]
    angles = (torch.arange(360) + 0.5) / 360 * 2 * math.pi - math.pi
    with torch.no_grad():
        density = aug.eval().distribution(images).log_prob(angles[:, None, None].expand(-1, 32, 1)).exp().T
    step = 2 * math.pi / 360
    near = (density * (angles.abs() <= math.pi / 4)).sum(1) * step
    far = (density * (angles.abs() >= 3 * math.pi / 4)).sum(1) * step
    assert float((near + far).mean()) > 0.8  # mass on the arcs (uniform: 0.5)
    assert float(near.mean()) > 0.25 and float(far.mean()) > 0.25  # both arcs, not one
