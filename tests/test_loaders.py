"""Loaders for real datasets, checked against tiny folders of real image files and .npz archives written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaaug.data.loaders import load_dataset, load_image_folder, load_npz, load_tiny_imagenet

CLASSES = ("ant", "bee", "cat")


def pattern(k: int, channels: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A uint8 image (H, W) or (H, W, C) whose pixels are distinct within it and differ between values of k."""
    h, w = size
    base = np.arange(h * w).reshape(h, w) + 40 * k
    if channels == 1:
        return (base % 256).astype(np.uint8)
    return np.stack([(base + 7 * c) % 256 for c in range(channels)], axis=-1).astype(np.uint8)


def as_chw(a: np.ndarray) -> torch.Tensor:
    """The float32 tensor (C, H, W) a loader should return for a uint8 image (H, W) or (H, W, C)."""
    chw = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.array(chw)).float() / 255  # a copy: PIL's arrays are read-only


def write_folder(root: Path, channels: int, ext: str = ".png", per_class: int = 2) -> list[np.ndarray]:
    """root/<class>/<i><ext> for CLASSES (created in reverse order) → the arrays written, in label order."""
    written = []
    for label, name in reversed(list(enumerate(CLASSES))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = pattern(per_class * label + i, channels)
            Image.fromarray(a).save(root / name / f"{i}{ext}")
            written.append((label, i, a))
    return [a for _, _, a in sorted(written, key=lambda t: t[:2])]


def test_image_folder_png_round_trips_exactly(tmp_path: Path) -> None:
    for channels in (1, 3):
        root = tmp_path / f"c{channels}"
        written = write_folder(root, channels)
        images, labels, names = load_image_folder(root)
        assert images.shape == (6, channels, 8, 8) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert names == CLASSES
        assert torch.equal(images, torch.stack([as_chw(a) for a in written]))


def test_image_folder_skips_hidden_and_foreign_files_and_accepts_any_case(tmp_path: Path) -> None:
    write_folder(tmp_path, 1)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"garbage")
    (tmp_path / ".cache").mkdir()
    Image.fromarray(pattern(9, 1)).save(tmp_path / "bee" / "2.PNG")
    images, labels, names = load_image_folder(tmp_path)
    assert names == CLASSES and labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert torch.equal(images[4], as_chw(pattern(9, 1)))


def test_mixed_grey_and_colour_gives_rgb_and_channels_converts(tmp_path: Path) -> None:
    (tmp_path / "grey").mkdir()
    (tmp_path / "rgb").mkdir()
    grey, rgb = pattern(0, 1), pattern(1, 3)
    Image.fromarray(grey).save(tmp_path / "grey" / "a.png")
    Image.fromarray(rgb).save(tmp_path / "rgb" / "b.bmp")
    images, _, _ = load_image_folder(tmp_path)
    assert images.shape == (2, 3, 8, 8)
    assert torch.equal(images[0], as_chw(grey).expand(3, -1, -1)) and torch.equal(images[1], as_chw(rgb))
    images, _, _ = load_image_folder(tmp_path, channels=1)
    assert images.shape == (2, 1, 8, 8)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert torch.equal(images[0], as_chw(grey)) and torch.equal(images[1], as_chw(luma))
    only_grey = tmp_path / "only_grey"
    (only_grey / "g").mkdir(parents=True)
    Image.fromarray(grey).save(only_grey / "g" / "a.png")
    assert load_image_folder(only_grey).images.shape[1] == 1
    assert torch.equal(load_image_folder(only_grey, channels=3).images[0], as_chw(grey).expand(3, -1, -1))


def test_jpeg_gif_and_transparency(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8), (200, 40, 90)).save(tmp_path / "a" / "flat.JPEG", quality=95)
    Image.new("RGBA", (8, 8), (200, 100, 50, 0)).save(tmp_path / "a" / "invisible.png")
    Image.new("LA", (8, 8), (120, 255)).save(tmp_path / "a" / "opaque_la.png")
    Image.fromarray(pattern(2, 1)).save(tmp_path / "a" / "grey.gif")  # PIL reads it back as a grey palette (P)
    images, _, _ = load_image_folder(tmp_path)
    flat, grey, invisible, opaque = images  # sorted file names: flat.JPEG, grey.gif, invisible.png, opaque_la.png
    expected = torch.tensor([200, 40, 90]).float()[:, None, None] / 255
    assert torch.allclose(flat, expected.expand(3, 8, 8), atol=3 / 255)
    assert torch.equal(grey, as_chw(pattern(2, 1)).expand(3, -1, -1))
    assert torch.equal(invisible, torch.zeros(3, 8, 8))  # transparency is composited over black
    assert torch.equal(opaque, torch.full((3, 8, 8), 120 / 255))


def test_resize(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a" / "small.png")
    Image.new("RGB", (12, 6), (40, 50, 60)).save(tmp_path / "b" / "wide.png")  # PIL sizes are (W, H)
    with pytest.raises(ValueError, match=r"wide\.png is 6×12.*small\.png is 8×8.*image_size"):
        load_image_folder(tmp_path)
    images, _, _ = load_image_folder(tmp_path, image_size=4)
    assert images.shape == (2, 3, 4, 4)
    assert torch.allclose(images[1], torch.tensor([40.0, 50, 60])[:, None, None].expand(3, 4, 4) / 255)
    assert load_image_folder(tmp_path, image_size=(5, 7)).images.shape == (2, 3, 5, 7)
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path, image_size=(0, 4))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")
    Image.fromarray(pattern(0, 1)).save(tmp_path / "stray.png")
    with pytest.raises(ValueError, match=r"no class folders.*1 image file"):
        load_image_folder(tmp_path)
    write_folder(tmp_path / "data", 3)
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path / "data", channels=2)
    (tmp_path / "data" / "dog").mkdir()
    (tmp_path / "data" / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*dog has no images"):
        load_image_folder(tmp_path / "data")
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(b"\x89PNG not really a png")
    with pytest.raises(ValueError, match=r"cannot read image .*dog.broken\.png"):
        load_image_folder(tmp_path / "data")
    good = (tmp_path / "data" / "ant" / "0.png").read_bytes()
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path / "data")


def write_tiny_imagenet(root: Path, *, wnids: bool = True, words: bool = True) -> None:
    """Two classes listed unsorted in wnids.txt, two 8×8 training images each (one greyscale), three val images."""
    order = ("n02", "n01")
    if wnids:
        root.mkdir(parents=True)
        (root / "wnids.txt").write_text("n02\nn01\n")
    if words:
        root.mkdir(parents=True, exist_ok=True)
        (root / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n")
    for k, wnid in enumerate(order):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored")
        Image.new("RGB", (8, 8), (50 + 100 * k, 60, 70)).save(folder / f"{wnid}_0.JPEG")
        Image.new("L", (8, 8), 30 + 100 * k).save(folder / f"{wnid}_1.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(("n01", "n02", "n01")):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    write_tiny_imagenet(root)
    images, labels, names = load_tiny_imagenet(root)
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 1, 1]  # wnids.txt order: n02 first
    assert names == ("tabby, tabby cat", "goldfish, Carassius auratus")
    assert torch.allclose(images[1], torch.full((3, 8, 8), 30 / 255), atol=3 / 255)  # greyscale JPEG → RGB
    images, labels, _ = load_tiny_imagenet(root, "val", image_size=4)
    assert images.shape == (3, 3, 4, 4) and labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="split"):
        load_tiny_imagenet(root, "test")


def test_tiny_imagenet_without_wnids_or_words_uses_sorted_folders(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    write_tiny_imagenet(root, wnids=False, words=False)
    _, labels, names = load_tiny_imagenet(root)
    assert names == ("n01", "n02") and labels.tolist() == [0, 0, 1, 1]
    assert load_tiny_imagenet(root, split="val").labels.tolist() == [0, 1, 0]


def test_tiny_imagenet_errors(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    write_tiny_imagenet(root)
    annotations = root / "val" / "val_annotations.txt"
    text = annotations.read_text()
    annotations.write_text(text + "val_9.JPEG\tn01\t0\t0\t7\t7\n")
    with pytest.raises(FileNotFoundError, match=r"val_9\.JPEG is listed"):
        load_tiny_imagenet(root, "val")
    annotations.write_text(text.replace("val_1.JPEG\tn02", "val_1.JPEG\tn99"))
    with pytest.raises(ValueError, match=r"val_1\.JPEG: class 'n99'"):
        load_tiny_imagenet(root, "val")
    (root / "wnids.txt").write_text("n02\nn01\nn03\n")
    with pytest.raises(FileNotFoundError, match=r"n03.images does not exist"):
        load_tiny_imagenet(root)


def npz_layouts() -> list[tuple[str, np.ndarray, tuple[int, int]]]:
    grey = np.stack([pattern(k, 1) for k in range(3)])  # (3, 8, 8)
    rgb = np.stack([pattern(k, 3) for k in range(3)])  # (3, 8, 8, 3)
    return [("NHW", grey, (1, 8)), ("NHWC", rgb, (3, 8)), ("NCHW", rgb.transpose(0, 3, 1, 2), (3, 8))]


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_npz_layouts_and_dtypes(tmp_path: Path, layout: str, dtype: str) -> None:
    array = next(a for name, a, _ in npz_layouts() if name == layout)
    expected = torch.stack([as_chw(pattern(k, 1 if layout == "NHW" else 3)) for k in range(3)])
    stored = array if dtype == "uint8" else (array / 255).astype(dtype)
    np.savez(tmp_path / "d.npz", images=stored, labels=np.array([2, 0, 1]))
    images, labels, names = load_npz(tmp_path / "d.npz")
    assert images.dtype == torch.float32 and images.is_contiguous()
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0, 1]
    assert names == ("0", "1", "2")
    if dtype == "uint8":
        assert torch.equal(images, expected)
    else:
        assert torch.allclose(images, expected, atol=1e-6)


def test_npz_class_names_keys_alpha_and_explicit_layout(tmp_path: Path) -> None:
    rgba = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, ..., 3] = 255  # image 0 opaque, image 1 fully transparent → black
    np.savez(tmp_path / "d.npz", x=rgba, y=np.array([[1.0], [0.0]]), class_names=np.array(["cat", "dog"]))
    with pytest.raises(ValueError, match=r"channel axis.*layout="):
        load_npz(tmp_path / "d.npz", images_key="x", labels_key="y")  # (2, 4, 4, 4): ambiguous
    images, labels, names = load_npz(tmp_path / "d.npz", images_key="x", labels_key="y", layout="NHWC")
    assert images.shape == (2, 3, 4, 4) and labels.tolist() == [1, 0] and names == ("cat", "dog")
    assert torch.equal(images[0], torch.full((3, 4, 4), 200 / 255)) and torch.equal(images[1], torch.zeros(3, 4, 4))


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    with pytest.raises(FileNotFoundError, match=r"d\.npz"):
        load_npz(path)
    np.savez(path, images=images, targets=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"d\.npz has no array 'labels'; it holds \['images', 'targets'\]"):
        load_npz(path)
    np.savez(path, images=images, labels=np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"d\.npz: 'images' has 3 images but 'labels' has 2"):
        load_npz(path)
    np.savez(path, images=images, labels=np.array([0, 0.5, 1]))
    with pytest.raises(ValueError, match=r"d\.npz: 'labels' must hold integers.*0\.5"):
        load_npz(path)
    np.savez(path, images=images, labels=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"d\.npz: 'labels' must hold integers"):
        load_npz(path)
    np.savez(path, images=images, labels=np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"d\.npz: 'labels' must be non-negative, found -1 at index 1"):
        load_npz(path)
    np.savez(path, images=np.full((3, 8, 8), 1.5), labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"d\.npz: floating-point 'images' must lie in \[0, 1\], found \[1\.5, 1\.5\]"):
        load_npz(path)
    np.savez(path, images=np.zeros((3, 8, 8, 5)), labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"d\.npz: cannot tell the channel axis"):
        load_npz(path)
    np.savez(path, images=images, labels=np.array([0, 1, 2]), class_names=np.array(["only", "two"]))
    with pytest.raises(ValueError, match=r"d\.npz: 'labels' reaches 2 but 'class_names' has 2"):
        load_npz(path)
    np.savez(path, images=images, labels=np.array([{"a": 1}, 2, 3], dtype=object))  # needs pickle: refused
    with pytest.raises(ValueError, match=r"d\.npz: array 'labels' cannot be read without unpickling"):
        load_npz(path)
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"d\.npz is not a readable \.npz archive"):
        load_npz(path)


def test_load_dataset_dispatches(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), dtype=np.uint8), labels=np.array([0, 1]))
    assert load_dataset(tmp_path / "d.npz").images.shape == (2, 1, 4, 4)
    write_tiny_imagenet(tmp_path / "tiny")
    assert load_dataset(tmp_path / "tiny", split="val").labels.tolist() == [1, 0, 1]
    write_folder(tmp_path / "folder", 3)
    assert load_dataset(str(tmp_path / "folder"), channels=1).images.shape == (6, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: cannot tell how to load it"):
        load_dataset(tmp_path / "notes.txt")
