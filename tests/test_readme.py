"""The README's library example runs as written."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import torch

import instaaug
from instaaug.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(marker: str) -> str:
    """The first Python block of the README that contains ``marker``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]
    assert blocks, f"the README must show an example with {marker!r}"
    return blocks[0]


def run_readme_example(marker: str) -> dict:
    """Execute that block; its namespace."""
    namespace: dict = {}
    exec(compile(readme_example(marker), str(README), "exec"), namespace)
    return namespace


def test_readme_quick_start_runs_on_real_photographs_and_reaches_its_entropy_band(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README must show a Python example"
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    # Record the entropy of every step of the last epoch.
    entropies: list[float] = []
    source = blocks[0].replace(
        "        opt.step()",
        "        opt.step()\n        entropies.append(float(terms.entropy)) if epoch == 9 else None",
    )
    exec(compile(source, str(README), "exec"), {"entropies": entropies})
    assert (tmp_path / "my_aug" / "weights.safetensors").is_file()
    aug = instaaug.InstaAug.load(tmp_path / "my_aug")
    low, high = aug.entropy_range
    assert len(entropies) == 16
    mean = sum(entropies) / len(entropies)
    assert low <= mean <= high, (mean, (low, high))


def test_readme_crop_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_readme_example('views="top"')
    assert namespace["out"].images.shape == (16, 3, 64, 64)
    assert namespace["tta"](namespace["x"]).shape == (8, 10)


def test_readme_safe_loading_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_readme_example("load_foreign_weights")
    assert capsys.readouterr().out.strip() == "['bias', 'weight']"


def test_readme_dense_targets_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_readme_example("DenseTTAWrapper")
    out = namespace["out"]
    assert out.targets.masks.shape == (8, 1, 64, 64)
    assert set(out.targets.masks.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    assert out.targets.boxes.shape == (8, 1, 4) and out.targets.box_valid.shape == (8, 1)
    assert out.targets.keypoints.shape == (8, 2, 2) and out.targets.keypoint_visible.shape == (8, 2)
    assert namespace["per_view"].shape == (8,)
    assert namespace["logits"].shape == (8, 5, 64, 64) and namespace["coverage"].shape == (8, 1, 64, 64)
    probs = namespace["probs"]
    assert probs.shape == (4, 5, 64, 64)
    assert torch.allclose(probs.sum(1), torch.ones(4, 64, 64), atol=1e-5)


def test_readme_real_data_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run_readme_example("load_dataset")
    assert capsys.readouterr().out.strip() == "torch.Size([192, 3, 48, 48]) 24"
    assert namespace["labels"].unique().numel() == 24


#: Every Python block of the README is run by a test in this file that finds it by one of these markers; a new block
#: without a marker here fails the test below until it has a test.
TESTED_MARKERS = (
    "opt.step()",
    'views="top"',
    "DenseTTAWrapper",
    "load_foreign_weights",
    "load_dataset",
    "amortised",
    "canonicalise",
    "nt_xent_per_view",
)


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def test_every_python_block_of_the_readme_is_run_by_a_test():
    blocks = _fenced_blocks(README.read_text())
    python = [body for language, body in blocks if language == "python"]
    assert len(python) >= 6
    untested = [b.splitlines()[:3] for b in python if not any(m in b for m in TESTED_MARKERS)]
    assert not untested, untested
    unlabelled = [b.splitlines()[:2] for language, b in blocks if not language and "import " in b]
    assert not unlabelled, f"Python code in blocks not marked python, so no test finds them: {unlabelled}"


def test_readme_your_data_commands_run(tmp_path, monkeypatch, capsys):
    """The commands of "Your data, your model", in order, as written but for smaller sizes: `example-data` with 3
    images per class of 24 px, `fit`/`tta` with `--quick --image-size 24` (one epoch) in place of `--epochs 30`."""
    text = README.read_text()
    section = text[text.index("## Your data, your model") :]
    block = next(body for language, body in _fenced_blocks(section) if language == "bash")
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith(".venv/bin/instaaug")]
    assert [c[1] for c in commands] == ["example-data", "fit", "tta", "evaluate"]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = command[1:]
        if argv[0] == "example-data":
            argv = [*argv[:2], "--per-class", "3", "--size", "24"]
        elif argv[0] in ("fit", "tta"):
            argv = [a for a in argv if a not in ("--epochs", "30")] + [
                "--quick",
                "--image-size",
                "24",
                "--workers",
                "0",
            ]
        else:
            argv = (
                [*argv, "--image-size", "24", "--workers", "0"]
                if "--workers" in argv
                else [*argv, "--image-size", "24"]
            )
        assert main(argv) == 0, argv
    assert (tmp_path / "runs" / "photos-eval" / "predictions.csv").is_file()
    assert "accuracy" in capsys.readouterr().out


def test_readme_contrastive_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace = run_readme_example("nt_xent_per_view")
    assert namespace["features"].shape == (32, 32)
    assert math.isfinite(float(namespace["terms"].loss.detach())) and float(namespace["terms"].surrogate) != 0


def test_readme_amortised_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_readme_example("amortised")
    assert (tmp_path / "my_backbone" / "weights.safetensors").is_file()


def test_readme_mixture_example_runs():
    namespace = run_readme_example("canonicalise")
    assert namespace["out"].images.shape == (16, 3, 32, 32) and namespace["upright"].shape == (8, 3, 32, 32)
    assert namespace["dist"].low.shape == (8, 3, 2) and namespace["dist"].weights.shape == (8, 3)
