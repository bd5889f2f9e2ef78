"""The README's library example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_loop_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README must show a Python example"
    monkeypatch.chdir(tmp_path)
    gen = torch.Generator().manual_seed(0)
    loader = [(torch.rand(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen)) for _ in range(2)]
    namespace = {"loader": loader}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    aug = namespace["aug"]
    assert (tmp_path / "my_aug" / "weights.safetensors").is_file()
    assert aug.distribution(loader[0][0]).names == ("rotation", "hue")
    assert namespace["terms"].loss.requires_grad


def test_readme_crop_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    crop_blocks = [b for b in blocks if '"crop"' in b]
    assert crop_blocks, "the README must show the learned-crop example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(crop_blocks[0], str(README), "exec"), namespace)
    assert namespace["out"].images.shape == (16, 3, 64, 64)
    assert namespace["tta"](namespace["x"]).shape == (8, 10)


def test_readme_safe_loading_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    safe_blocks = [b for b in blocks if "load_foreign_weights" in b]
    assert safe_blocks, "the README must show the safe-loading example"
    monkeypatch.chdir(tmp_path)
    exec(compile(safe_blocks[0], str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "['bias', 'weight']"
