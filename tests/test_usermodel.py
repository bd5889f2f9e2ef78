"""instaaug.usermodel: models built from a user's factory or a built-in name, and their weights loaded safely."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from instaaug.usermodel import build_model, load_model_weights


def test_build_model_from_a_factory_fills_in_num_classes_and_checks_the_result(factory_module):
    model = build_model(f"{factory_module}:tiny", in_channels=3, outputs=7, args={})
    assert model(torch.rand(2, 3, 12, 12)).shape == (2, 7)
    for spec, match in (
        (f"{factory_module}:not_a_model", "not a torch.nn.Module"),
        (f"{factory_module}:missing", "has no attribute"),
        ("no_such_package.models:net", "cannot import"),
        ("resnet", "built-in name"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            build_model(spec, in_channels=3, outputs=7, args={})
    with pytest.raises(ValueError, match="could not be built"):
        build_model(f"{factory_module}:tiny", in_channels=3, outputs=7, args={"depth": 3})


def test_model_weights_load_from_safetensors_and_weights_only_torch_files(tmp_path):
    source = build_model("small_cnn", in_channels=3, outputs=5, args={"width": 4})
    state = {k: v.clone() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.pt")  # as saved from DDP
    for name in ("w.safetensors", "w.pt"):
        target = build_model("small_cnn", in_channels=3, outputs=5, args={"width": 4})
        load_model_weights(target, str(tmp_path / name))
        assert all(torch.equal(target.state_dict()[k], v) for k, v in state.items())
    wrong = build_model("small_cnn", in_channels=3, outputs=6, args={"width": 4})
    with pytest.raises(ValueError, match="wrong shape"):
        load_model_weights(wrong, str(tmp_path / "w.safetensors"))
    other = build_model("small_cnn", in_channels=3, outputs=5, args={"width": 4, "depth": 4})
    with pytest.raises(ValueError, match="does not fit the model"):
        load_model_weights(other, str(tmp_path / "w.safetensors"))
