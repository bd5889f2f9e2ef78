"""Safe loading: a malicious pickle where an augmenter or a checkpoint is expected is refused, its code never runs;
a bad config.json (wrong types, absurd sizes, deep nesting) or weights.safetensors (NaN/Inf, oversized) is refused
with an error naming the key or tensor and the file, before anything large is allocated."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import pickle
import random
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import instaaug.augment as augment_module
from conftest import tiny_aug
from instaaug import InstaAug
from instaaug.augment import (
    CONFIG_FILE,
    MAX_CLASSES,
    MAX_COPIES,
    MAX_IN_CHANNELS,
    MAX_WIDTH,
    WEIGHTS_FILE,
    Augmenter,
    InstaAugConfig,
)
from instaaug.baselines import Augerino, NoAugment, NoAugmentConfig, RandomAugment, RandomAugmentConfig, RandomCrop
from instaaug.io import (
    MAX_JSON_BYTES,
    load_checkpoint,
    load_foreign_weights,
    load_tensors,
    read_json,
    save_checkpoint,
    save_tensors,
)
from instaaug.validation import MAX_IMAGE_SIDE


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


# ------------------------------------------------------------------------------------------------------------------
# Bad config.json values: every key of every augmenter config is checked (type, range, size bound) before any module
# is built, with an error naming the key and the file.

# The base augmenters whose saved config.json the cases below edit, by name; each is small and quick to build.
_BASES = {
    "instaaug": lambda: tiny_aug(("rotation", "flip")),
    "crop": lambda: InstaAug(("crop",), phi_size=16, levels=(1,), depth=2, width=4),
    "random": lambda: RandomAugment(("rotation", "flip")),
    "none": lambda: NoAugment(),
    "augerino": lambda: Augerino(("rotation",), width=4, depth=2),
    "random_crop": lambda: RandomCrop(),
}

T, V = TypeError, ValueError
_NOT_A_NUMBER = [("0.1", T), (None, T), (True, T), ([0.1], T), ({"x": 1}, T)]
_NOT_AN_INT = [(2.0, T), ("3", T), (True, T), (None, T), ([3], T)]
_NOT_A_NAME = [(5, T), (None, T), (["instance"], T), ({}, T), (True, T)]
_NOT_A_FLAG = [("yes", T), ("true", T), (1, T), (0, T), (None, T), ([True], T)]
_NOT_A_SIZE = [
    ("32", V),
    (32.5, V),
    (True, V),
    ([32], V),
    ([32, 32, 3], V),
    ([0, 32], V),
    ([[16, 16]], V),
    ([9000, 16], V),
]

#: (base, key) → bad values with the exception each must raise.
_BAD_VALUES: dict[tuple[str, str], list[tuple[Any, type[Exception]]]] = {
    ("instaaug", "transforms"): [(5, T), (None, T), ([["rotation"]], T), ([], V), (["blur"], V), (["flip", "flip"], V)],
    ("instaaug", "mode"): [("pixel", V), *_NOT_A_NAME],
    ("instaaug", "network"): [("vgg", V), *_NOT_A_NAME],
    ("instaaug", "norm"): [("group", V), *_NOT_A_NAME],
    ("instaaug", "padding_mode"): [("wrap", V), *_NOT_A_NAME],
    ("instaaug", "width"): [(10**9, V), (1025, V), (0, V), (-4, V), *_NOT_AN_INT],
    ("instaaug", "depth"): [(9, V), (0, V), *_NOT_AN_INT],
    ("instaaug", "in_channels"): [(65, V), (0, V), *_NOT_AN_INT],
    ("instaaug", "n_copies"): [(4097, V), (10**9, V), (0, V), *_NOT_AN_INT],
    ("instaaug", "num_classes"): [(10**6 + 1, V), (0, V), (2.0, T), ("10", T), (True, T), ([10], T)],
    ("instaaug", "entropy_range"): [
        ([1, "a"], T),
        (["1", "2"], T),
        ([None, 1], T),
        ([True, 2], T),
        ([[1], [2]], T),
        ([1], V),
        ([1, 2, 3], V),
        ([2, 1], V),
        ([1, float("inf")], V),
        ([float("nan"), 1], V),
        (5, T),
        ("ab", T),
    ],
    ("instaaug", "entropy_widths"): [
        (5, T),
        (None, T),
        ("rotation", T),
        ([["rotation"]], V),
        ([["rotation", 0.1]], V),
        ([[5, 0.1, 0.2]], V),
        ([[["rotation"], 0.1, 0.2]], V),
        ([["hue", 0.1, 0.2]], V),
        ([["flip", 0.1, 0.2]], V),
        ([["rotation", "0.1", 0.2]], T),
        ([["rotation", 0.1, None]], T),
        ([["rotation", 0.2, 0.1]], V),
        ([["rotation", 0, 0.1]], V),
        ([["rotation", 0.1, float("inf")]], V),
        ([["rotation", 0.1, 0.2], ["rotation", 0.1, 0.2]], V),
        ({"rotation": "wide"}, V),
    ],
    ("instaaug", "init_half_width"): [
        ("ab", T),
        (0.1, T),
        ([[0.1]], T),
        (["0.1"], T),
        ([True], T),
        ([0.0], V),
        ([-0.1], V),
        ([float("inf")], V),
        ([0.1] * 1000, V),
        ([0.1, 0.1], V),  # rotation has one dimension
        ([10.0], V),  # beyond rotation's bounds
    ],
    ("instaaug", "min_width"): [(0, V), (-1.0, V), (100.0, V), (float("inf"), V), *_NOT_A_NUMBER],
    ("instaaug", "symmetric"): _NOT_A_FLAG,
    ("instaaug", "phi_size"): _NOT_A_SIZE,
    ("instaaug", "output_size"): _NOT_A_SIZE,
    ("instaaug", "levels"): [("1", T), ([True], T), (["1"], T), ([1.0], T), ([[1]], T), ([], V), ([8], V), ([-9], V)],
    ("instaaug", "global_crop"): _NOT_A_FLAG,
    ("instaaug", "level_bias"): [("0", T), (["a"], T), ([[0.0]], T), ([float("nan")], V), ([0.0] * 10, V)],
    ("instaaug", "box_scale"): [(0, V), (-1, V), (float("inf"), V), *_NOT_A_NUMBER],
    ("instaaug", "min_inside"): [(0, V), (1.5, V), *_NOT_A_NUMBER],
    ("instaaug", "centre_jitter"): [(-0.1, V), (1.1, V), *_NOT_A_NUMBER],
    ("instaaug", "size_jitter"): [(1.0, V), (-0.1, V), *_NOT_A_NUMBER],
    ("instaaug", "flip_init"): [(0, V), (1, V), (1.5, V), *_NOT_A_NUMBER],
    ("instaaug", "lam_init"): [(0, V), (-1.0, V), (float("inf"), V), ("0.1", T), ([0.1], T), (True, T)],
    ("instaaug", "lam_rate"): [(1.0, V), (0.5, V), ("1.1", T), (False, T)],
    ("instaaug", "lam_min"): [(0, V), (-0.1, V), ("0.1", T), ({"x": 1}, T)],
    ("instaaug", "distribution"): [("gmm", V), (3, T), (None, T), (["flow"], T)],
    ("instaaug", "components"): [(0, V), (17, V), (2.5, T), ("3", T), (True, T)],
    ("instaaug", "mixture_init"): [("even", V), ("symmetric", V), (1, T), (None, T)],  # symmetric: not a mixture
    ("instaaug", "symmetry_divisions"): [(0, V), (16, V), (6.0, T), ("6", T), (True, T)],
    ("instaaug", "flow_context"): [(0, V), (10**6, V), ("32", T)],
    ("instaaug", "flow_transforms"): [(0, V), (100, V), (1.5, T)],
    ("instaaug", "flow_hidden"): [(-1, V), (10**9, V), ([64], T)],
    ("instaaug", "entropy_samples"): [(0, V), (10**7, V), ("8", T)],
    # Crop options are checked whether or not the augmenter has crops; with crops, the level-dependent ones too.
    ("crop", "levels"): [([7], V), ([-3], V), (list(range(9)), V)],
    ("crop", "level_bias"): [([0.0, 0.0, 0.0], V)],
    ("crop", "phi_size"): [([0, 16], V), ("big", V)],
    ("random", "transforms"): [(5, T), ([["rotation"]], T), (["blur"], V), (["rotation", "rotation"], V)],
    ("random", "ranges"): [
        (5, T),
        ("x", T),
        ([["rotation", 1]], V),
        ([["rotation", 1, 2, 3]], V),
        ([[["rotation"], 1, 2]], V),
        ([["rotation", "a", 1]], T),
        ([["rotation", "-0.1", "0.1"]], T),
        ([["rotation", None, 1]], T),
        ([["rotation", True, 1]], T),
        ([["rotation", float("nan"), 1]], V),
        ([["hue", -0.1, 0.1]], V),  # not one of the transforms
        ([["rotation", -9.0, 9.0]], V),  # beyond rotation's bounds
        ([["rotation", 0.5, -0.5]], V),
        ([["flip", 2, 2]], V),
        ([["flip", 0.2, 0.9]], V),
        ([["rotation", -1, 1], ["rotation", -1, 1]], V),
    ],
    ("random", "in_channels"): [(65, V), (10**9, V), (0, V), *_NOT_AN_INT],
    ("random", "n_copies"): [(4097, V), (10**9, V), (0, V), *_NOT_AN_INT],
    ("random", "padding_mode"): [("wrap", V), *_NOT_A_NAME],
    ("random", "output_size"): _NOT_A_SIZE,
    ("none", "in_channels"): [(65, V), (10**9, V), (0, V), *_NOT_AN_INT],
    ("none", "n_copies"): [(4097, V), (10**9, V), (0, V), *_NOT_AN_INT],
    ("augerino", "symmetric"): [(False, V), ("yes", T), (1, T), (0, T)],
    ("augerino", "mode"): [("instance", V), ("class", V), (5, T)],
    ("augerino", "transforms"): [(["crop"], V), (["flip"], V), (5, T)],
    ("augerino", "width"): [(10**9, V)],
    ("random_crop", "transforms"): [(["rotation"], V), (["crop", "flip"], V)],
    ("random_crop", "ranges"): [([], V), ([["crop", 0, 1]], V), ([["crop", 0.9, 0.5]], V), ([["crop", "a", 1]], T)],
}

_CASES = [
    pytest.param(base, key, value, error, id=f"{base}-{key}-{i}")
    for (base, key), values in _BAD_VALUES.items()
    for i, (value, error) in enumerate(values)
]


@pytest.fixture(scope="module")
def saved_bases(tmp_path_factory) -> dict[str, Path]:
    """Each base augmenter saved once; a case copies its directory and edits the copy's config."""
    root = tmp_path_factory.mktemp("bases")
    return {name: make().save(root / name) for name, make in _BASES.items()}


def _with_config(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of the saved augmenter in ``source`` whose config has ``changes``; returns its config path."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / WEIGHTS_FILE, target / WEIGHTS_FILE)
    meta = json.loads((source / CONFIG_FILE).read_text())
    meta["config"].update(changes)
    (target / CONFIG_FILE).write_text(json.dumps(meta))
    return target / CONFIG_FILE


@pytest.fixture
def no_phi_built(monkeypatch):
    """Fail the test if φ's network is built: every config check must come before it."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("φ was built before the config was refused")

    monkeypatch.setattr(augment_module, "InvarianceNet", refuse)


def test_every_field_of_every_augmenter_config_has_bad_value_cases():
    # Guards the table above: a field added to a config class must get cases of its own.
    covered = {key for _, key in _BAD_VALUES}
    for cls in (InstaAugConfig, RandomAugmentConfig, NoAugmentConfig):
        missing = {f.name for f in dataclasses.fields(cls)} - covered
        assert not missing, f"{cls.__name__} fields without bad-value cases: {sorted(missing)}"
    assert {type(make()).__name__ for make in _BASES.values()} >= {
        name
        for name, kind in Augmenter.registry.items()
        if kind.config_class and kind.__module__.startswith("instaaug")
    }


@pytest.mark.parametrize(("base", "key", "value", "error"), _CASES)
def test_bad_config_value_is_refused_naming_the_key_and_the_file(saved_bases, tmp_path, base, key, value, error):
    config = _with_config(saved_bases[base], tmp_path / "aug", **{key: value})
    with pytest.raises(error) as info:
        Augmenter.load(tmp_path / "aug")
    assert type(info.value) is error
    message = str(info.value)
    assert message.startswith(f"{config}: "), message
    assert key in message, message
    assert len(message) < 600, message  # a huge or deeply nested value is quoted briefly


_OVERSIZED: list[tuple[str, dict[str, Any], str]] = [
    ("instaaug", {"width": 10**9}, "width"),
    ("instaaug", {"width": 10**100}, "width"),
    ("instaaug", {"n_copies": 10**12}, "n_copies"),
    ("instaaug", {"num_classes": 10**12, "mode": "class"}, "num_classes"),
    ("instaaug", {"phi_size": [10**6, 10**6]}, "phi_size"),
    ("instaaug", {"init_half_width": [0.5] * 100_000}, "init_half_width"),
    ("instaaug", {"depth": 10**9}, "depth"),
    ("instaaug", {"levels": list(range(100_000))}, "levels"),
    ("instaaug", {"level_bias": [0.0] * 100_000}, "level_bias"),
    ("random", {"output_size": [10**9, 10**9]}, "output_size"),
    # Each key within its bound, their product beyond memory:
    ("instaaug", {"network": "preact_resnet18", "width": 1024}, "width"),
    ("instaaug", {"width": 1024, "depth": 8}, "width"),
    ("crop", {"phi_size": [8192, 8192], "width": 1024}, "phi_size"),
    ("crop", {"phi_size": [4096, 4096], "width": 1, "levels": [0]}, "phi_size"),
    ("crop", {"mode": "class", "num_classes": 10**6, "levels": [0], "phi_size": [64, 64]}, "num_classes"),
    ("random", {"n_copies": 10**9, "in_channels": 10**9}, "in_channels"),
    ("none", {"n_copies": 10**9}, "n_copies"),
    ("augerino", {"width": 10**9}, "width"),
]


@pytest.mark.parametrize(("base", "changes", "key"), _OVERSIZED, ids=[f"{b}-{'-'.join(c)}" for b, c, _ in _OVERSIZED])
def test_oversized_config_is_refused_before_anything_is_allocated(
    saved_bases, tmp_path, no_phi_built, base, changes, key
):
    config = _with_config(saved_bases[base], tmp_path / "aug", **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=key) as info:
        Augmenter.load(tmp_path / "aug")
    assert str(info.value).startswith(f"{config}: ")
    assert time.perf_counter() - start < 5.0  # refused by arithmetic, not after an attempt to allocate


def test_sizes_at_their_bounds_are_accepted_without_building_anything_large():
    # The bounds are documented maxima, not a refusal of everything large: a φ at the width bound is fine.
    config = InstaAugConfig(("crop", "rotation"), width=MAX_WIDTH, phi_size=(64, 64), n_copies=MAX_COPIES)
    assert config.width == MAX_WIDTH
    InstaAugConfig(("rotation",), mode="class", num_classes=MAX_CLASSES, in_channels=MAX_IN_CHANNELS)
    InstaAugConfig(("rotation",), phi_size=MAX_IMAGE_SIDE, output_size=(MAX_IMAGE_SIDE, 1))


@pytest.mark.parametrize(
    ("base", "changes"),
    [
        ("instaaug", {"entropy_range": [1, 2], "lam_rate": 2, "min_width": 1, "init_half_width": [1]}),  # ints
        ("instaaug", {"entropy_widths": {"rotation": [0.5, 1]}, "init_half_width": [1]}),  # the API's dict form
        ("instaaug", {"phi_size": 16, "output_size": [8, 12]}),  # an int for a square size
        ("crop", {"levels": 1, "level_bias": [0]}),  # one level as an int
        ("random", {"ranges": [["rotation", -1, 1], ["flip", 0.2, 0.2]]}),
    ],
)
def test_lenient_but_valid_config_values_still_load(saved_bases, tmp_path, base, changes):
    _with_config(saved_bases[base], tmp_path / "aug", **changes)
    aug = Augmenter.load(tmp_path / "aug")
    assert type(aug) is type(_BASES[base]())


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ([], "not an augmenter config"),
        ({"format": "instaaug.augmenter", "version": 2, "class": "InstaAug", "config": 5}, "not an augmenter config"),
        ({"format": 5, "version": 2, "class": "InstaAug", "config": {}}, "format 5"),
        ({"format": "instaaug.augmenter", "version": "2", "class": "InstaAug", "config": {}}, "version"),
        (
            {"format": "instaaug.augmenter", "version": 2, "class": ["InstaAug"], "config": {}},
            "unknown augmenter class",
        ),
        ({"format": "instaaug.augmenter", "version": 2, "class": "os.system", "config": {}}, "unknown augmenter class"),
        ({"format": "instaaug.augmenter", "version": 2, "class": "Augmenter", "config": {}}, "unknown augmenter class"),
        ({"format": "instaaug.InstaAug", "version": 2, "config": {}}, "version"),
    ],
)
def test_bad_config_envelope_is_refused_naming_the_file(tmp_path, meta, match):
    tiny_aug(("rotation",)).save(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match) as info:
        Augmenter.load(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "config", "key", "error"),
    [
        ("instaaug.InstaAug", {"width": 10**9}, "width", ValueError),
        ("instaaug.InstaAug", {"symmetric": "yes"}, "symmetric", TypeError),
        ("instaaug.InstaAug", {"entropy_range": [1, "a"]}, "entropy_range", TypeError),
        ("instaaug.InstaAug", {"transforms": 5}, "transforms", TypeError),
        ("instaaug.InstaAug", {"learning_rate": 0.1}, "learning_rate", ValueError),
        ("instaaug.InstaAugCrop", {"image_size": [10**6, 10**6]}, "image_size", ValueError),
        ("instaaug.InstaAugCrop", {"image_size": "big"}, "image_size", ValueError),
        ("instaaug.InstaAugCrop", {"image_size": 16, "width": 1024, "depth": 8}, "width", ValueError),
        ("instaaug.InstaAugCrop", {"image_size": 16, "global_crop": 1}, "global_crop", TypeError),
    ],
)
def test_bad_legacy_config_is_refused_naming_the_key_and_the_file(
    saved_bases, tmp_path, no_phi_built, fmt, config, key, error
):
    path = _with_config(saved_bases["instaaug"], tmp_path / "aug")
    path.write_text(json.dumps({"format": fmt, "version": 1, "config": config}))
    with pytest.raises(error, match=key) as info:
        Augmenter.load(tmp_path / "aug")
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("depth", [100_000, 10**6])
def test_absurdly_nested_config_is_a_clear_error(tmp_path, depth):
    tiny_aug(("rotation",)).save(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("[" * depth + "]" * depth)
    with pytest.raises(ValueError, match="nested too deeply") as info:
        Augmenter.load(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(info.value)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(tmp_path / CONFIG_FILE)


def test_nested_value_within_the_parser_limit_is_quoted_briefly(tmp_path):
    tiny_aug(("rotation",)).save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    text = json.dumps(meta).replace('"width": 4', '"width": ' + "[" * 500 + "]" * 500)
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(TypeError, match="width must be an int") as info:
        Augmenter.load(tmp_path)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{" + b'"pad": "' + b"x" * (MAX_JSON_BYTES + 10) + b'"}', "too big"),  # a valid JSON file, far too big
        (b'{"width": ' + b"9" * 100_000 + b"}", "not valid JSON"),  # an integer too long to convert
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
    ids=["too-big", "long-int", "binary", "empty"],
)
def test_oversized_or_malformed_config_file_is_refused_naming_the_file(tmp_path, content, match):
    tiny_aug(("rotation",)).save(tmp_path)
    (tmp_path / CONFIG_FILE).write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        Augmenter.load(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(info.value)


# ------------------------------------------------------------------------------------------------------------------
# Bad weights.safetensors: non-finite, retyped or oversized tensors are refused naming the tensor and the file.


def _float_tensors(aug: Augmenter) -> list[str]:
    return [k for k, v in aug.state_dict().items() if v.is_floating_point()]


# Every floating-point tensor of each augmenter with weights, each spoilt by one of NaN, +Inf and -Inf in turn.
_WEIGHT_CASES = [
    pytest.param(base, name, value, id=f"{base}-{name}-{value}")
    for base in ("instaaug", "crop", "random", "augerino")
    for name, value in zip(
        _float_tensors(_BASES[base]()), itertools.cycle((float("nan"), float("inf"), float("-inf"))), strict=False
    )
]


@pytest.mark.parametrize(("base", "name", "value"), _WEIGHT_CASES)
def test_non_finite_weights_are_refused_naming_the_tensor_and_the_file(saved_bases, tmp_path, base, name, value):
    _with_config(saved_bases[base], tmp_path / "aug")
    weights = tmp_path / "aug" / WEIGHTS_FILE
    state = load_tensors(weights)
    state[name] = state[name].flatten().index_fill(0, torch.tensor([0]), value).view_as(state[name])
    save_tensors(weights, state)
    with pytest.raises(ValueError, match="NaN or Inf") as info:
        Augmenter.load(tmp_path / "aug")
    assert name in str(info.value) and str(weights) in str(info.value)


def test_integer_tensor_in_place_of_a_float_weight_is_refused(tmp_path):
    aug = tiny_aug(("rotation",))
    aug.save(tmp_path)
    state = dict(aug.state_dict())
    state["net.output.bias"] = torch.zeros(state["net.output.bias"].shape, dtype=torch.int64)
    save_tensors(tmp_path / WEIGHTS_FILE, state)
    with pytest.raises(ValueError, match=r"wrong dtype \['net.output.bias'\]"):
        Augmenter.load(tmp_path)


def test_oversized_weights_file_is_refused_before_it_is_read(tmp_path):
    aug = tiny_aug(("rotation",))
    aug.save(tmp_path)
    save_tensors(tmp_path / WEIGHTS_FILE, {**aug.state_dict(), "padding": torch.zeros(2**20)})
    with pytest.raises(ValueError, match="too big") as info:
        Augmenter.load(tmp_path)
    assert str(tmp_path / WEIGHTS_FILE) in str(info.value)


# ------------------------------------------------------------------------------------------------------------------
# A refused file is described as a pickle only when its first bytes say so exactly.


def _torch_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    return buffer.getvalue()


def _plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a pickle")
    return buffer.getvalue()


_PICKLES = [
    pytest.param(pickle.dumps({"w": [1, 2]}, protocol=p), "pickle file", id=f"pickle-{p}") for p in (2, 3, 4, 5)
]
_NEUTRAL = {
    "random": bytes([0x17]) + random.Random(0).randbytes(4095),
    "text": b"hello, this is a text file\n" * 20,
    "json": b'{"w": [1, 2, 3]}',
    "empty": b"",
    "proto-byte-alone": b"\x80",
    "proto-1": b"\x80\x01" + b"\x00" * 64,
    "proto-6": b"\x80\x06" + b"\x00" * 64,
    "proto-letter": b"\x80abc" + b"\x00" * 64,
    "pickle-protocol-0": pickle.dumps({"w": 1}, protocol=0),
    "pickle-protocol-1": pickle.dumps({"w": 1}, protocol=1),
    "zip": _plain_zip(),
    "zip-header-only": b"PK\x03\x04" + b"\x00" * 64,
}


@pytest.mark.parametrize(("raw", "hint"), [*_PICKLES, pytest.param(_torch_zip(), "torch.save file", id="torch-zip")])
def test_pickle_files_are_named_as_such(tmp_path, raw, hint):
    (tmp_path / "w").write_bytes(raw)
    with pytest.raises(ValueError, match=hint) as info:
        load_tensors(tmp_path / "w")
    assert "never unpickles" in str(info.value)


@pytest.mark.parametrize("name", sorted(_NEUTRAL))
def test_other_files_are_never_described_as_a_pickle(tmp_path, name):
    tiny_aug(("rotation",)).save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(_NEUTRAL[name])
    for load in (lambda: load_tensors(tmp_path / WEIGHTS_FILE), lambda: Augmenter.load(tmp_path)):
        with pytest.raises(ValueError, match="not a valid safetensors file") as info:
            load()
        message = str(info.value)
        assert "pickle" not in message.lower() and "torch.save" not in message, message
