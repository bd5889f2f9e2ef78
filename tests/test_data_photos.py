"""instaaug.data.photos: the example folder of real JPEG photographs."""

from __future__ import annotations

import pytest
from PIL import Image

from instaaug.data.loaders import read_images
from instaaug.data.photos import FOLDER_PHOTOS, write_photo_folder


def test_photo_folder_holds_real_jpegs_one_folder_per_region_and_is_deterministic(photos, tmp_path):
    classes = sorted(p.name for p in photos.iterdir())
    assert len(classes) == 4 * len(FOLDER_PHOTOS) and "china-r0c0" in classes
    files = sorted(photos.glob("*/*.jpg"))
    assert len(files) == 6 * len(classes)
    with Image.open(files[0]) as img:
        assert img.format == "JPEG" and img.size == (24, 24) and img.mode == "RGB"
    again = write_photo_folder(tmp_path / "again", per_class=6, size=24)
    assert all((again / f.relative_to(photos)).read_bytes() == f.read_bytes() for f in files[:10])
    # Regions of different photographs differ; patches of one region differ in place and scale.
    pixels = read_images(files[:6]).flatten(1)
    assert (pixels[0] - pixels[1]).abs().mean() > 0.01
    with pytest.raises(ValueError, match="not an empty folder"):
        write_photo_folder(photos)
    assert not [p for p in photos.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
