"""The amortised-audio experiment end to end (its quick run) and its config checks."""

from __future__ import annotations

import json

import pytest

from instaaug.cli import main
from instaaug.data.audio import synth_sounds
from instaaug.experiments import amortised_audio


def test_quick_run_writes_the_promised_metrics(tmp_path):
    out = tmp_path / "run"
    argv = ["--set", "threads=1", "--set", "probe.readout_steps=30"]  # a nested key (at its --quick value)
    assert main(["run", "amortised-audio", "--quick", "--out", str(out), *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "amortised-audio" and metrics["config"]["threads"] == 1
    assert metrics["config"]["probe"]["readout_steps"] == 30 and metrics["config"]["pretrain"]["method"] == "simclr"
    (record,) = metrics["per_seed"]  # one seed: the means are its own numbers
    assert record["seed"] == 0 and record["tasks"]["pitch"] == {
        k: v for k, v in metrics["tasks"]["pitch"].items() if not k.endswith("_std") and k != "seeds"
    }
    assert (out / "amortised" / "config.json").is_file()  # one seed: the models directly under --out
    assert list(metrics["tasks"]) == ["source", "pitch", "onset", "loudness"]
    assert set(metrics["methods"]) == {"amortised", "ordinary", "ordinary_0,1,1", "ordinary_1,0,1", "ordinary_1,1,0"}
    for name, task in metrics["tasks"].items():
        assert task["metric"] == ("accuracy" if name == "source" else "r2")
        assert set(task["learned_i"]) == {"timing", "pitch", "level"}
        assert all(0 <= v <= 1 for v in task["learned_i"].values())
        assert list(task["score_corners"]) == ["0,0,1", "0,1,0", "0,1,1", "1,0,0", "1,0,1", "1,1,0", "1,1,1"]
        assert task["task_corner"] == amortised_audio.TASK_CORNERS[name]
        values = [task["score_learned"], task["score_grid"], task["score_ordinary"], task["score_task_specific"]]
        for value in [*values, *task["score_corners"].values()]:
            assert isinstance(value, float) and value <= 1
    assert (out / "amortised_audio_i.png").stat().st_size > 5_000
    assert (out / "audio_examples.png").stat().st_size > 5_000


def test_config_rejects_bad_settings(tmp_path, capsys):
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        amortised_audio.Config(tasks=("source", "timbre"))
    with pytest.raises(ValueError, match="n_mels must be an int"):
        amortised_audio.Config(n_mels=0)
    with pytest.raises(ValueError, match="n must be an int"):
        synth_sounds(0, seed=0)
    assert main(["run", "amortised-audio", "--quick", "--out", str(tmp_path), "--data", "x.npz"]) == 2
    assert "built-in synthesised sounds only" in capsys.readouterr().err
