"""Safe loading: a malicious pickle where an augmenter or a checkpoint is expected is refused, its code never runs."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from conftest import tiny_aug
from instaaug import InstaAug
from instaaug.augment import CONFIG_FILE, WEIGHTS_FILE
from instaaug.io import load_checkpoint, load_foreign_weights, load_tensors, save_checkpoint, save_tensors


class _Payload:
    """Unpickling this object creates the file at ``marker`` (standing in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path, marker, writer: str) -> None:
    state = {"net.output.weight": torch.zeros(2), "payload": _Payload(str(marker))}
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))


def test_the_payload_is_live(tmp_path):
    # Guard for the tests below: unpickling the payload does create the marker.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_weights_in_an_augmenter_directory_are_refused(tmp_path, writer):
    tiny_aug(("rotation",)).save(tmp_path)
    marker = tmp_path / "pwned"
    _malicious(tmp_path / WEIGHTS_FILE, marker, writer)
    with pytest.raises(ValueError, match=r"not a valid safetensors file.*pickle"):
        InstaAug.load(tmp_path)
    assert not marker.exists()


def test_malicious_pickle_in_place_of_the_augmenter_config_is_refused(tmp_path):
    tiny_aug(("rotation",)).save(tmp_path)
    marker = tmp_path / "pwned"
    _malicious(tmp_path / CONFIG_FILE, marker, "pickle")
    with pytest.raises(ValueError, match="not valid JSON"):
        InstaAug.load(tmp_path)
    assert not marker.exists()


def test_malicious_crop_augmenter_weights_are_refused(tmp_path):
    InstaAug(("crop",), phi_size=16, levels=(1,), depth=2, width=4).save(tmp_path)
    marker = tmp_path / "pwned"
    _malicious(tmp_path / WEIGHTS_FILE, marker, "torch")
    with pytest.raises(ValueError, match="pickle"):
        InstaAug.load(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_checkpoint_is_refused(tmp_path, writer):
    good = tmp_path / "last.ckpt"
    save_checkpoint(good, {"step": 3, "model": {"w": torch.ones(2)}})
    bad = tmp_path / "evil.ckpt"
    marker = tmp_path / "pwned"
    _malicious(bad, marker, writer)
    with pytest.raises(ValueError, match=r"not a valid instaaug checkpoint.*never unpickles"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="pickle"):
        load_tensors(bad)
    assert not marker.exists()
    assert load_checkpoint(good)["step"] == 3


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_foreign_weights_refuse_code_but_accept_plain_tensors(tmp_path, writer):
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "evil.pt", marker, writer)
    with pytest.raises(ValueError, match="refused"):
        load_foreign_weights(tmp_path / "evil.pt")
    assert not marker.exists()

    # A plain state dict saved by torch.save is readable through the weights-only unpickler ...
    model = torch.nn.Linear(3, 2)
    torch.save({"state": model.state_dict(), "epoch": 4}, tmp_path / "ok.pt")
    loaded = load_foreign_weights(tmp_path / "ok.pt")
    assert sorted(loaded) == ["state.bias", "state.weight"]
    assert torch.equal(loaded["state.weight"], model.weight.detach())
    # ... and so is a safetensors file.
    save_tensors(tmp_path / "ok.safetensors", {"w": torch.arange(3.0)})
    assert torch.equal(load_foreign_weights(tmp_path / "ok.safetensors")["w"], torch.arange(3.0))


def test_truncated_foreign_file_is_a_clear_error(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "a.pt")
    raw = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="refused"):
        load_foreign_weights(tmp_path / "a.pt")
    with pytest.raises(FileNotFoundError):
        load_foreign_weights(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"transforms": ["rotation"], "evil": {"__reduce__": "os.system"}}, "evil"),
    ],
)
def test_augmenter_config_with_unknown_keys_is_refused(tmp_path, change, match):
    tiny_aug(("rotation",)).save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"].update(change)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        InstaAug.load(tmp_path)


def test_augmenter_config_with_a_wrong_typed_value_is_refused(tmp_path):
    tiny_aug(("rotation",)).save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"]["width"] = "sixteen"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(TypeError, match="width"):
        InstaAug.load(tmp_path)
