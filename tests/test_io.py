"""Files: checkpoint round trips of nested state, corrupted and pickled files, atomic writes."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch
from torch import nn

from instaaug.io import (
    atomic_write_bytes,
    load_checkpoint,
    load_tensors,
    read_json,
    save_checkpoint,
    save_tensors,
    write_json,
)


def trained_state() -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(2):
        optimiser.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        optimiser.step()
    return {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "epoch": 7,
        "lr": 2.5e-3,
        "name": "run-α",
        "flags": [True, False, None],
        "nested": {"a": [1, [2.0, {"b": torch.arange(3)}]], "empty": {}, "none": None},
        "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("inf")}],
    }


def assert_same(a, b, where: str = "state", strict: bool = False) -> None:
    """Deep equality with tensor dtypes and key order; with ``strict``, tuples must stay tuples too."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]", strict)
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) if strict else isinstance(b, list | tuple), f"{where}: {a!r} vs {b!r}"
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]", strict)
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}"


def test_checkpoint_round_trip_of_nested_state(tmp_path):
    state = trained_state()
    save_checkpoint(tmp_path / "ckpt", state)
    assert_same(load_checkpoint(tmp_path / "ckpt"), state)


def test_checkpoint_round_trip_restores_model_and_optimiser(tmp_path):
    state = trained_state()
    save_checkpoint(tmp_path / "ckpt", state)
    loaded = load_checkpoint(tmp_path / "ckpt")
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.load_state_dict(loaded["model"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=1.0)
    optimiser.load_state_dict(loaded["optimiser"])
    group = optimiser.state_dict()["param_groups"][0]
    assert group["lr"] == 1e-2 and tuple(group["betas"]) == (0.8, 0.95) and group["foreach"] is None
    assert optimiser.state_dict()["state"][0]["step"].item() == 2
    assert loaded["model"]["1.num_batches_tracked"].dtype == torch.int64
    assert set(loaded["optimiser"]["state"]) == {0, 1, 2, 3, 4, 5}  # integer keys stay integers


def test_checkpoint_preserves_tuples(tmp_path):
    state = {"betas": (0.9, 0.999), "shape": (3, (4, 5)), "as_list": [1, 2]}
    save_checkpoint(tmp_path / "ckpt", state)
    assert_same(load_checkpoint(tmp_path / "ckpt"), state, strict=True)


def test_checkpoint_tuple_dict_keys(tmp_path):
    state = {"per_pair": {(0, 1): 0.5, (1, 2): torch.ones(2)}}
    save_checkpoint(tmp_path / "ckpt", state)
    assert_same(load_checkpoint(tmp_path / "ckpt"), state)


def test_checkpoint_keys_that_look_like_tags(tmp_path):
    state = {"__tensor__": "s.0", "__list__": [1], "__dict__": {"x": 1}}
    save_checkpoint(tmp_path / "ckpt", state)
    assert_same(load_checkpoint(tmp_path / "ckpt"), state)


def test_checkpoint_rejects_unstorable_values(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "ckpt", {"x": object()})
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.999])
def test_truncated_checkpoint_raises_value_error(tmp_path, keep):
    save_checkpoint(tmp_path / "ckpt", trained_state())
    raw = (tmp_path / "ckpt").read_bytes()
    (tmp_path / "ckpt").write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError, match="not a valid instaaug checkpoint"):
        load_checkpoint(tmp_path / "ckpt")


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    save_tensors(tmp_path / "weights", {"w": torch.ones(2)})
    with pytest.raises(ValueError, match="not a valid instaaug checkpoint"):
        load_checkpoint(tmp_path / "weights")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_files_are_rejected_without_running_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    state = {"model": {"w": torch.ones(2)}, "payload": _Payload(str(marker))}
    path = tmp_path / "ckpt"
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(ValueError):
        load_checkpoint(path)
    with pytest.raises(ValueError):
        load_tensors(path)
    assert not marker.exists()


def test_tensor_file_round_trip_and_errors(tmp_path):
    base = torch.arange(12.0).view(3, 4)
    tensors = {"a": base.T, "b": base[0], "c": torch.tensor(3, dtype=torch.int64)}  # views and shared storage
    save_tensors(tmp_path / "t", tensors)
    loaded = load_tensors(tmp_path / "t")
    assert sorted(loaded) == sorted(tensors)
    for k, v in tensors.items():
        assert_same(loaded[k], v.contiguous(), k)
    (tmp_path / "bad").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_tensors(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "missing")


def test_json_round_trip_and_errors(tmp_path):
    write_json(tmp_path / "sub" / "m.json", {"a": [1, 2], "b": None})
    assert read_json(tmp_path / "sub" / "m.json") == {"a": [1, 2], "b": None}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "deep" / "f.bin", b"one")
    atomic_write_bytes(tmp_path / "deep" / "f.bin", b"two")
    assert (tmp_path / "deep" / "f.bin").read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["f.bin"]


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    # A plain open() creates files with mode 0o666 & ~umask; the temp-file-and-rename trick must not turn
    # saved models and metrics into owner-only files (mkstemp creates 0o600).
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"data")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"data")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "f.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o644, oct(mode)


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"original")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails inside the write
    assert target.read_bytes() == b"original"

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("instaaug.io.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"replacement")
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_failed_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ckpt", {"epoch": 1})
    monkeypatch.setattr("instaaug.io.os.fsync", lambda _fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", {"epoch": 2})
    assert load_checkpoint(tmp_path / "ckpt") == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
