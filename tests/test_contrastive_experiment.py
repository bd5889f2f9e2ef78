"""`instaaug run contrastive`: the quick run end to end, the probe's selection on held-out images, config errors."""

from __future__ import annotations

import json

import pytest
import torch

from instaaug import InstaAug, Then
from instaaug.cli import main
from instaaug.experiments.common import apply_overrides
from instaaug.experiments.contrastive import METHODS, Config, make_data
from instaaug.objective import ContrastiveInstaAugObjective, TaskObjective


def test_contrastive_quick_run_writes_every_method_and_the_figures(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["run", "contrastive", "--quick", "--out", str(out)]) == 0
    assert "probe TTA" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METHODS) <= set(metrics["methods"])
    for name in METHODS:
        m = metrics["methods"][name]
        for key in ("probe_accuracy", "probe_accuracy_tta", "probe_accuracy_std", "probe_accuracy_tta_std"):
            assert 0 <= m[key] <= 1, (name, key)
        assert m["probe_c"] in Config.quick().probe_cs
        assert ("final_entropy" in m) == name.startswith("instaaug")
    assert metrics["methods"]["random-crop"]["min_scale"] == 0.5
    for name in ("instaaug", "instaaug-global", "instaaug-crop"):
        assert InstaAug.load(out / name / "seed0").config.n_copies == 2
        assert (out / f"views_{name}.png").is_file()
    assert (out / "colour_ranges.png").is_file()
    # The learned run's history is the joint part, after the encoder's warm-up on random views.
    history = (out / "instaaug" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 1 and "train_positive_top1" in json.loads(history[0])


def test_methods_build_their_augmenters_and_objectives():
    config = Config.quick()
    aug, objective = METHODS.build("instaaug-crop", config, steps_per_epoch=4)
    assert isinstance(aug, Then) and aug.first.families == ("crop",)
    assert isinstance(objective, ContrastiveInstaAugObjective) and objective.reward == "group"
    aug, objective = METHODS.build("instaaug", apply_overrides(config, ["phi_objective=reference"]), 4)
    assert set(aug.families) == {"crop", "value", "contrast", "flip"} and objective.reward == "anchor"
    assert isinstance(METHODS.build("random-crop-0.3", config, 4)[1], TaskObjective)
    with pytest.raises(ValueError, match="unknown method"):
        METHODS.build("simclr", config, 4)


def test_data_keep_test_digits_out_of_pre_training():
    config = apply_overrides(Config.quick(), ["n_unlabelled=1400"])
    data = make_data(config)
    assert data.pretrain.shape == (1400 + config.n_probe, 1, 48, 48)
    test = data.test[0]
    # No test image appears among the pre-training images (different source digits).
    distances = torch.cdist(test.flatten(1), data.pretrain.flatten(1))
    assert float(distances.min()) > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("validation=0", "validation"),
        ("n_test=600", "n_test"),
        ("phi_objective=best", "phi_objective"),
        ("temperature=0", "temperature"),
        ("random_min_scales=0,0.5", "random_min_scales"),
        ("encoder_warmup_epochs=5", "encoder_warmup_epochs"),
        ("methods=simclr", "simclr"),
    ],
)
def test_bad_settings_fail_with_one_clear_line(override, message, tmp_path, capsys):
    assert main(["run", "contrastive", "--quick", "--out", str(tmp_path / "x"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
