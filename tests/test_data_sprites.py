"""instaaug.data.sprites: the built-in sprites, their rotated copies and the Mario–Iggy file format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instaaug.data.sprites import builtin_sprites, load_mario_iggy, rotated_sprites
from instaaug.transforms import TransformStack


def test_builtin_sprites_are_distinct_and_asymmetric():
    sprites = builtin_sprites()
    assert sprites.shape == (2, 3, 32, 32) and sprites.dtype == torch.float32
    assert sprites.min() >= 0 and sprites.max() <= 1
    assert (sprites[0] - sprites[1]).abs().mean() > 0.1
    for s in sprites:  # upside down and mirrored differ from the original, so orientation is learnable
        assert (s - s.flip(-2)).abs().mean() > 0.05
        assert (s - s.flip(-1)).abs().mean() > 0.05


def test_rotated_sprites_labels_angles_and_orientation():
    sprites = builtin_sprites()
    x, y, angle = rotated_sprites(sprites, 400, torch.Generator().manual_seed(0))
    assert x.shape == (400, 3, 32, 32) and y.shape == (400,) and angle.shape == (400,)
    assert torch.bincount(y, minlength=4).tolist() == [100, 100, 100, 100]
    assert angle.abs().max() <= math.pi / 4
    # Rotating each image back by its full angle recovers its class's sprite (upright or upside down).
    back = TransformStack(("rotation",))(x, -(angle + math.pi * (y % 2).float())[:, None])
    centre = slice(10, 22)  # away from corners lost to the rotations
    err = (back - sprites[y // 2])[..., centre, centre].abs().mean(dim=(1, 2, 3))
    other = (back - sprites[1 - y // 2])[..., centre, centre].abs().mean(dim=(1, 2, 3))
    assert (err < other).all()
    assert err.mean() < 0.12


def test_rotated_sprites_are_reproducible():
    a = rotated_sprites(builtin_sprites(), 16, torch.Generator().manual_seed(3))
    b = rotated_sprites(builtin_sprites(), 16, torch.Generator().manual_seed(3))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


def test_load_mario_iggy_reads_the_public_format(tmp_path):
    mario = np.random.default_rng(0).random((1, 3, 32, 32))
    iggy = np.random.default_rng(1).random((1, 3, 32, 32))
    path = tmp_path / "sprites.npz"
    np.savez(path, mario=mario, iggy=iggy)
    sprites = load_mario_iggy(path)
    assert sprites.shape == (2, 3, 32, 32) and sprites.dtype == torch.float32
    assert np.allclose(sprites[0].numpy(), mario[0]) and np.allclose(sprites[1].numpy(), iggy[0])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mario": np.zeros((1, 3, 32, 32))}, "lacks key"),
        ({"mario": np.zeros((1, 1, 32, 32)), "iggy": np.zeros((1, 1, 32, 32))}, "shape"),
        ({"mario": np.full((1, 3, 32, 32), 2.0), "iggy": np.zeros((1, 3, 32, 32))}, r"\[0, 1\]"),
        ({"mario": np.zeros((1, 3, 32, 32), np.uint8), "iggy": np.zeros((1, 3, 32, 32))}, "floats"),
    ],
)
def test_load_mario_iggy_rejects_bad_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_mario_iggy(path)


def test_load_mario_iggy_rejects_missing_and_non_npz_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mario_iggy(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="npz"):
        load_mario_iggy(junk)
