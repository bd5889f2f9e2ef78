"""Loaders for real image datasets, read whole into memory: an image folder, Tiny-ImageNet-200 and ``.npz`` arrays.

Every loader returns a :class:`LoadedDataset`, a named tuple ``(images, labels, class_names)``: ``images`` float32
(N, C, H, W) in [0, 1], ``labels`` int64 (N,) and ``class_names`` a tuple of str indexed by label. ``load_dataset``
picks the loader from the path.

The three layouts:

* **Image folder** (``load_image_folder``): ``root/<class>/<image>``, one sub-folder per class. Labels 0..K-1 follow
  the sorted folder names (plain string order, so ``"10"`` sorts before ``"2"``); a class's images are read in sorted
  file-name order. Only files directly inside a class folder whose extension is one of :data:`IMAGE_EXTENSIONS` (any
  case) are read; every other file, and hidden files and folders (names starting with ``.``), are skipped.
* **Tiny-ImageNet-200** (``load_tiny_imagenet``): ``root/wnids.txt`` (one WordNet id per line, optional),
  ``root/words.txt`` (``wnid<TAB>names``, optional), ``root/train/<wnid>/images/*.JPEG``, and ``root/val/images/*.JPEG``
  labelled by ``root/val/val_annotations.txt`` (``file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1``; boxes are ignored).
  Labels follow the order of ``wnids.txt`` when it exists (note: the official file is *not* sorted), otherwise the
  sorted names of the ``train/`` sub-folders.
* **npz archive** (``load_npz``): ``images`` (N, H, W), (N, H, W, C) or (N, C, H, W) with C ∈ {1, 3, 4}, uint8 (÷255)
  or floats in [0, 1]; ``labels`` integers (N,); optionally ``class_names`` (K,) str. The archive is opened with
  ``allow_pickle=False``, so object arrays are refused rather than unpickled.

Pixel conventions shared by the loaders: transparency (RGBA, LA, palette images with a transparent colour, and a
4th npz channel) is composited over black, as the built-in sprites are drawn on black; an animated GIF gives its first
frame; 16-bit images are scaled by 1/65535; grey→RGB repeats the grey value and RGB→grey uses PIL's ITU-R 601 luma.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
NPZ_LAYOUTS = ("auto", "NHWC", "NCHW")
_CHANNEL_SIZES = (1, 3, 4)
# PIL raises all of these for files it cannot identify or decode (SyntaxError: some plugins on malformed headers).
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class LoadedDataset(NamedTuple):
    """A labelled image dataset in memory; unpacks as ``images, labels, class_names = load_...(...)``.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 in [0, len(class_names)).
        class_names: the name of each class, indexed by label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]


class ImageFiles(NamedTuple):
    """A labelled image dataset on disk: ``paths`` (N,), ``labels`` (N,) int64 and ``class_names`` (K,)."""

    paths: list[Path]
    labels: np.ndarray
    class_names: tuple[str, ...]


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _parse_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or a pair (H, W) of positive ints, got {image_size!r}")
    return size


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(p) and p.is_file()]
    return sorted(files, key=lambda p: p.name)


def _grey_palette(img: Image.Image) -> bool:
    palette = img.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _canonical(img: Image.Image) -> Image.Image:
    """``img`` in one of the modes L, LA, I, F (grey) or RGB, RGBA (colour), which resize and convert handle."""
    mode = img.mode
    if mode in ("L", "LA", "I", "F", "RGB", "RGBA"):
        return img
    if mode == "P":
        # Going through RGBA turns a transparent palette entry into alpha (a direct RGB conversion warns and drops it).
        transparent = "transparency" in img.info
        if _grey_palette(img):
            return img.convert("RGBA").convert("LA") if transparent else img.convert("L")
        return img.convert("RGBA") if transparent else img.convert("RGB")
    if mode in ("1", "L;16"):
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    if mode.startswith("I;16"):
        return img.convert("I")
    if mode in ("PA", "RGBa"):
        return img.convert("RGBA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _to_array(img: Image.Image) -> np.ndarray:
    """(H, W) for grey or (H, W, 3) for colour: uint8 (to be divided by 255) or float32 already in [0, 1]."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("LA", "RGBA"):
        a = np.asarray(img, dtype=np.float32) / np.float32(255)
        composited = a[..., :-1] * a[..., -1:]  # over black
        return composited[..., 0] if mode == "LA" else composited
    if mode == "I":
        return np.clip(np.asarray(img, dtype=np.float32) / np.float32(65535), 0, 1)
    a = np.asarray(img, dtype=np.float32)  # mode F: no conventional range, so insist on [0, 1]
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise ValueError(f"floating-point pixels must lie in [0, 1], found [{a.min():g}, {a.max():g}]")
    return a


def _read_image(path: Path, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()  # decoding is lazy: force it here so that truncated files fail inside this try
            img = _canonical(opened)
        if channels == 1 and img.mode in ("RGB", "RGBA"):
            img = img.convert("L" if img.mode == "RGB" else "LA")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return _to_array(img)
    except _IMAGE_ERRORS as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _read_images(
    paths: Sequence[Path], *, image_size: int | Sequence[int] | None, channels: int | None, desc: str
) -> np.ndarray:
    """Read every file → (N, C, H, W) float32 in [0, 1]; with channels=None, C is 3 if any image is colour, else 1."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    size = _parse_size(image_size)
    # Keep the decoded images compact (mostly uint8) and fill one preallocated float array at the end: the channel
    # count is only known once every file is read, and this avoids holding two float copies of the dataset.
    arrays: list[np.ndarray] = []
    first: Path | None = None
    for path in tqdm(paths, desc=desc, unit="img", disable=None, leave=False):
        arr = _read_image(path, size, channels)
        if first is None:
            first = path
        elif arr.shape[:2] != arrays[0].shape[:2]:
            (h, w), (h0, w0) = arr.shape[:2], arrays[0].shape[:2]
            raise ValueError(
                f"{path} is {h}×{w} (H×W) but {first} is {h0}×{w0}; pass image_size=(H, W) to resize every image"
            )
        arrays.append(arr)
    if not arrays:
        raise ValueError(f"{desc}: no images to read")
    if channels is None:
        channels = 3 if any(a.ndim == 3 for a in arrays) else 1
    out = np.empty((len(arrays), channels, *arrays[0].shape[:2]), dtype=np.float32)
    for i, arr in enumerate(arrays):
        chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # a grey (1, H, W) broadcasts to every channel
        if arr.dtype == np.uint8:
            # float32 division, so that a stored value v reads back as exactly torch.tensor(v / 255, float32).
            np.divide(chw, np.float32(255), out=out[i], dtype=np.float32)
        else:
            out[i] = chw
    return out


def read_images(
    paths: Sequence[Path],
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    desc: str = "reading images",
) -> torch.Tensor:
    """Read image files into memory: (N, C, H, W) float32 in [0, 1] (conventions in the module docstring);
    ``image_size`` resizes, ``channels`` (1 or 3; None: 3 if any image is colour) converts."""
    return torch.from_numpy(_read_images(list(paths), image_size=image_size, channels=channels, desc=desc))


def _dataset(images: np.ndarray, labels: Sequence[int] | np.ndarray, class_names: Sequence[str]) -> LoadedDataset:
    return LoadedDataset(
        torch.from_numpy(images), torch.as_tensor(np.asarray(labels, dtype=np.int64)), tuple(class_names)
    )


def list_image_folder(root: str | os.PathLike) -> ImageFiles:
    """The files of an image folder ``root/<class>/<image>`` and their labels, without reading them (see
    ``load_image_folder`` for the layout)."""
    root = _existing(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; expected one sub-folder of images per class")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not _hidden(p)), key=lambda p: p.name)
    if not class_dirs:
        stray = len(_image_files(root))
        hint = f" (it holds {stray} image file(s) directly: move them into one folder per class)" if stray else ""
        raise ValueError(f"{root} has no class folders{hint}; expected one sub-folder of images per class")
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        files = _image_files(folder)
        if not files:
            raise ValueError(
                f"class folder {folder} has no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}, any case)"
            )
        paths += files
        labels += [label] * len(files)
    return ImageFiles(paths, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs))


def load_image_folder(
    root: str | os.PathLike, *, image_size: int | tuple[int, int] | None = None, channels: int | None = None
) -> LoadedDataset:
    """Read ``root/<class>/<image>`` (one sub-folder per class) into memory.

    Args:
        root: the folder holding one sub-folder per class; labels follow the sorted sub-folder names.
        image_size: resize every image to (size, size) or (H, W) with PIL bilinear; None keeps the files' size, which
            must then be the same for all.
        channels: 1 (grey) or 3 (RGB); None: 3 if any image is colour, else 1.

    Returns:
        images (N, C, H, W) float32 in [0, 1], labels (N,) int64, class_names (K,) — the sub-folder names.
    """
    files = list_image_folder(root)
    images = _read_images(files.paths, image_size=image_size, channels=channels, desc=f"reading {Path(root).name}")
    return _dataset(images, files.labels, files.class_names)


def _tiny_wnids(root: Path) -> list[str]:
    listing = root / "wnids.txt"
    if listing.is_file():
        wnids = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not wnids:
            raise ValueError(f"{listing} lists no classes")
        duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
        if duplicates:
            raise ValueError(f"{listing} lists {duplicates} more than once")
        return wnids
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"{root} has neither wnids.txt nor a train/ folder to take the classes from")
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir() and not _hidden(p))
    if not wnids:
        raise ValueError(f"{train} has no class folders")
    return wnids


def _tiny_names(root: Path, wnids: Sequence[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return list(wnids)
    names: dict[str, str] = {}
    for line in words.read_text(encoding="utf-8").splitlines():
        wnid, _, name = line.partition("\t")
        if name.strip():
            names[wnid.strip()] = name.strip()
    return [names.get(w, w) for w in wnids]


def list_tiny_imagenet(root: str | os.PathLike, split: str = "train") -> ImageFiles:
    """The files of one split of Tiny-ImageNet-200 and their labels, without reading them (see
    ``load_tiny_imagenet``)."""
    root = _existing(root)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r} (the test split has no labels)")
    wnids = _tiny_wnids(root)
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for label, wnid in enumerate(wnids):
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} does not exist (class {wnid!r})")
            files = _image_files(folder)
            if not files:
                raise ValueError(f"class folder {folder} has no images")
            paths += files
            labels += [label] * len(files)
    else:
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise FileNotFoundError(f"{annotations} does not exist")
        seen: set[str] = set()
        for lineno, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{annotations}, line {lineno}: expected 'file<TAB>wnid<TAB>...', got {line!r}")
            name, wnid = fields[0].strip(), fields[1].strip()
            path = root / "val" / "images" / name
            if name in seen:
                raise ValueError(f"{path} is listed twice in {annotations} (line {lineno})")
            seen.add(name)
            if wnid not in index:
                raise ValueError(f"{path}: class {wnid!r} ({annotations}, line {lineno}) is not among the classes")
            if not path.is_file():
                raise FileNotFoundError(f"{path} is listed in {annotations} (line {lineno}) but does not exist")
            paths.append(path)
            labels.append(index[wnid])
        if not paths:
            raise ValueError(f"{annotations} lists no images")
    return ImageFiles(paths, np.asarray(labels, dtype=np.int64), tuple(_tiny_names(root, wnids)))


def load_tiny_imagenet(
    root: str | os.PathLike, split: str = "train", *, image_size: int | tuple[int, int] | None = None
) -> LoadedDataset:
    """Read one split of Tiny-ImageNet-200 (layout in the module docstring) into memory, as RGB.

    Args:
        root: the ``tiny-imagenet-200`` folder.
        split: ``"train"`` (``train/<wnid>/images``) or ``"val"`` (``val/images`` + ``val/val_annotations.txt``).
        image_size: resize every image to (size, size) or (H, W) with PIL bilinear; None keeps 64×64.

    Returns:
        images (N, 3, H, W) float32 in [0, 1] (the few greyscale JPEGs are repeated to RGB), labels (N,) int64
        indexing the wnids in ``wnids.txt`` order (sorted ``train/`` folder names without it), class_names (200,):
        the ``words.txt`` entry of each wnid (e.g. ``"goldfish, Carassius auratus"``), or the wnid itself.
        Training images come class by class in sorted file order; validation images in annotation order.
    """
    files = list_tiny_imagenet(root, split)
    images = _read_images(files.paths, image_size=image_size, channels=3, desc=f"tiny-imagenet {split}")
    return _dataset(images, files.labels, files.class_names)


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise ValueError(f"{path} has no array {key!r}; it holds {sorted(archive.files)}")
    try:
        return archive[key]
    except ValueError as e:  # object arrays: np.load refuses to unpickle them with allow_pickle=False
        raise ValueError(f"{path}: array {key!r} cannot be read without unpickling, which is refused: {e}") from None


def _npz_images(raw: np.ndarray, key: str, path: Path, layout: str) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) uint8 or float → (N, C', H, W) float32 in [0, 1], C' = 1 or 3."""
    if raw.ndim == 3:
        nchw = raw[:, None]
    elif raw.ndim == 4:
        last, second = raw.shape[3] in _CHANNEL_SIZES, raw.shape[1] in _CHANNEL_SIZES
        if layout == "auto" and last == second:
            why = "both axis 1 and axis 3 could" if last else "neither axis 1 nor axis 3 can"
            raise ValueError(
                f"{path}: cannot tell the channel axis of {key!r} {raw.shape}: {why} hold 1, 3 or 4 channels; "
                "pass layout='NHWC' or layout='NCHW'"
            )
        channels_last = layout == "NHWC" or (layout == "auto" and last)
        nchw = raw.transpose(0, 3, 1, 2) if channels_last else raw
        if nchw.shape[1] not in _CHANNEL_SIZES:
            raise ValueError(f"{path}: {key!r} {raw.shape} as {layout} has {nchw.shape[1]} channels, not 1, 3 or 4")
    else:
        raise ValueError(f"{path}: {key!r} must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {raw.shape}")
    if raw.shape[0] == 0:
        raise ValueError(f"{path}: {key!r} holds no images")
    if raw.dtype.kind in "iu":
        lo, hi = int(raw.min()), int(raw.max())
        if raw.dtype != np.uint8 and (lo < 0 or hi > 255):
            raise ValueError(f"{path}: integer {key!r} must lie in [0, 255] (divided by 255), found [{lo}, {hi}]")
        scale = np.float32(255)
    elif raw.dtype.kind == "f":
        lo, hi = float(np.min(raw)), float(np.max(raw))
        if not np.isfinite(lo) or not np.isfinite(hi) or lo < 0 or hi > 1:
            raise ValueError(f"{path}: floating-point {key!r} must lie in [0, 1], found [{lo:g}, {hi:g}]")
        scale = np.float32(1)
    else:
        raise ValueError(f"{path}: {key!r} must be uint8 or floating point, got {raw.dtype}")
    # One preallocated output: a plain ufunc call would keep the input's (possibly channels-last) memory order.
    out = np.empty(nchw.shape, dtype=np.float32)
    np.divide(nchw, scale, out=out, dtype=np.float32)
    if out.shape[1] == 4:
        out = out[:, :3] * out[:, 3:]  # RGBA: composite over black, like transparent image files
    return out


def _npz_labels(raw: np.ndarray, key: str, path: Path) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]  # a column vector, as MATLAB exports write
    if raw.ndim != 1:
        raise ValueError(f"{path}: {key!r} must be one label per image (N,), got shape {raw.shape}")
    if raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
        raw = raw.astype(np.int64)  # whole-number floats are unambiguous
    if raw.dtype.kind == "f":
        bad = raw[raw != np.round(raw)][:3].tolist()
        raise ValueError(f"{path}: {key!r} must hold integers, found non-integer values such as {bad}")
    if raw.dtype.kind not in "iu":
        raise ValueError(f"{path}: {key!r} must hold integers, got dtype {raw.dtype}")
    labels = raw.astype(np.int64)
    if labels.size and labels.min() < 0:
        first = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(f"{path}: {key!r} must be non-negative, found {labels[first]} at index {first}")
    return labels


def _open_npz(path: str | os.PathLike, layout: str) -> tuple[Path, np.lib.npyio.NpzFile]:
    path = _existing(path)
    if layout not in NPZ_LAYOUTS:
        raise ValueError(f"layout must be one of {NPZ_LAYOUTS}, got {layout!r}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected an .npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz archive: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array (.npy), not an .npz archive of images and labels")
    return path, archive


def _resized(images: np.ndarray, image_size: int | Sequence[int] | None) -> np.ndarray:
    """(N, C, H, W) float32 → the same at ``image_size`` (bilinear, antialiased like PIL's downscaling)."""
    size = _parse_size(image_size)
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    resized = [
        F.interpolate(torch.from_numpy(chunk), size=size, mode="bilinear", antialias=True).clamp_(0, 1).numpy()
        for chunk in np.array_split(images, max(1, len(images) // 1024))
    ]
    return np.concatenate(resized)


def load_npz(
    path: str | os.PathLike,
    *,
    images_key: str = "images",
    labels_key: str = "labels",
    class_names_key: str = "class_names",
    layout: str = "auto",
    image_size: int | tuple[int, int] | None = None,
) -> LoadedDataset:
    """Read images and labels from an ``.npz`` archive, never unpickling (``allow_pickle=False``).

    Args:
        path: the ``.npz`` file.
        images_key: the images array: (N, H, W) grey, or (N, H, W, C) / (N, C, H, W) with C ∈ {1, 3, 4}; uint8 (or
            another integer type within [0, 255]) is divided by 255, floats must already lie in [0, 1]. A 4th channel
            is alpha and is composited over black.
        labels_key: the labels array (N,) (or (N, 1)) of non-negative integers; whole-number floats are accepted.
        class_names_key: an optional (K,) array of str naming each class; without it the names are "0".."K-1",
            K = max label + 1.
        layout: where the channels are: ``"auto"`` uses the axis (1 or 3) of size 1, 3 or 4 and refuses shapes where
            both or neither are; ``"NHWC"`` or ``"NCHW"`` force it.
        image_size: resize every image to (size, size) or (H, W) (bilinear, antialiased); None keeps the arrays'.

    Returns:
        images (N, C, H, W) float32 in [0, 1] with C = 1 or 3, labels (N,) int64, class_names (K,).
    """
    path, archive = _open_npz(path, layout)
    with archive:
        raw_images = _npz_array(archive, images_key, path)
        raw_labels = _npz_array(archive, labels_key, path)
        raw_names = _npz_array(archive, class_names_key, path) if class_names_key in archive.files else None
    images = _resized(_npz_images(raw_images, images_key, path, layout), image_size)
    labels = _npz_labels(raw_labels, labels_key, path)
    if len(labels) != len(images):
        raise ValueError(f"{path}: {images_key!r} has {len(images)} images but {labels_key!r} has {len(labels)} labels")
    n_classes = int(labels.max()) + 1
    if raw_names is None:
        names = [str(i) for i in range(n_classes)]
    else:
        if raw_names.ndim != 1 or raw_names.dtype.kind not in "US":
            raise ValueError(f"{path}: {class_names_key!r} must be a 1-D array of str, got {raw_names.dtype}")
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw_names.tolist()]
        if len(names) < n_classes:
            raise ValueError(f"{path}: {labels_key!r} reaches {n_classes - 1} but {class_names_key!r} has {len(names)}")
    return _dataset(images, labels, names)


def _float_targets(raw: np.ndarray, n: int, where: str) -> np.ndarray:
    """Regression targets (N,) or (N, D) of real numbers → float32 (N, D), all finite."""
    if raw.dtype.kind not in "fiub" or raw.ndim not in (1, 2):
        raise ValueError(
            f"{where}: regression targets must be a numeric (N,) or (N, D) array, got {raw.dtype} {raw.shape}"
        )
    targets = raw.astype(np.float32).reshape(len(raw), -1)
    if len(targets) != n:
        raise ValueError(f"{where}: {len(targets)} targets for {n} images")
    if targets.shape[1] == 0 or not np.isfinite(targets).all():
        raise ValueError(f"{where}: regression targets must be finite numbers, at least one per image")
    return targets


def load_npz_targets(
    path: str | os.PathLike,
    *,
    images_key: str = "images",
    targets_key: str = "targets",
    layout: str = "auto",
    image_size: int | tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and real-valued regression targets from an ``.npz`` archive (never unpickling).

    Returns:
        images (N, C, H, W) float32 in [0, 1] (as ``load_npz``), targets (N, D) float32, all finite.
    """
    path, archive = _open_npz(path, layout)
    with archive:
        raw_images = _npz_array(archive, images_key, path)
        raw_targets = _npz_array(archive, targets_key, path)
    images = _resized(_npz_images(raw_images, images_key, path, layout), image_size)
    targets = _float_targets(raw_targets, len(images), f"{path}: {targets_key!r}")
    return torch.from_numpy(images), torch.from_numpy(targets)


def read_targets_csv(
    path: str | os.PathLike, root: str | os.PathLike
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Regression targets of an image folder from a CSV file.

    The CSV has a header row ``file,<target>,...``; each row names an image by its path relative to ``root`` and
    gives its D target values. Returns the image paths (N,), the targets float32 (N, D) and the D target names.
    """
    path, root = _existing(path), _existing(root)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a CSV file of regression targets")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{path}: expected a header 'file,<target>,...' and one row per image")
    header, body = rows[0], rows[1:]
    paths, values = [], []
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {lineno}: {len(row)} fields, the header has {len(header)}")
        image = (root / row[0].strip()).resolve()
        if not image.is_file():
            raise FileNotFoundError(f"{path}, line {lineno}: image {image} does not exist")
        try:
            values.append([float(v) for v in row[1:]])
        except ValueError:
            raise ValueError(f"{path}, line {lineno}: targets must be numbers, got {row[1:]}") from None
        paths.append(image)
    targets = _float_targets(np.asarray(values), len(paths), str(path))
    return paths, targets, tuple(h.strip() for h in header[1:])


def list_images(path: str | os.PathLike, split: str = "train") -> ImageFiles:
    """The files and labels of an image folder or of a Tiny-ImageNet split (``split``), without reading them."""
    path = _existing(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder of images")
    if _is_tiny_imagenet(path):
        return list_tiny_imagenet(path, split)
    return list_image_folder(path)


def _is_tiny_imagenet(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val" / "val_annotations.txt").is_file()


class ImageFileDataset(torch.utils.data.Dataset):
    """Images read from disk one at a time (for a ``DataLoader`` whose workers decode and resize in parallel).

    Item i is (image (C, H, W) float32 in [0, 1], target): ``targets[i]`` (an int64 label or a float32 vector).
    Every image is resized to ``image_size`` and converted to ``channels`` (1 or 3), so the items stack.
    """

    def __init__(
        self, paths: Sequence[Path], targets: torch.Tensor, image_size: int | tuple[int, int], channels: int = 3
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} images but {len(targets)} targets")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.paths, self.targets, self.channels = list(paths), targets, channels
        self.size = _parse_size(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = _read_image(self.paths[index], self.size, self.channels)
        chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(chw))
        image = image.float().div_(255) if image.dtype == torch.uint8 else image.float()
        return image.expand(self.channels, -1, -1).contiguous(), self.targets[index]


def load_dataset(path: str | os.PathLike, **kwargs) -> LoadedDataset:
    """Pick the loader from ``path`` and call it with ``kwargs``.

    A ``.npz`` file → :func:`load_npz`; a folder with ``train/`` and ``val/val_annotations.txt`` →
    :func:`load_tiny_imagenet` (``split=``); any other folder → :func:`load_image_folder`.

    Returns:
        images (N, C, H, W) float32 in [0, 1], labels (N,) int64, class_names (K,).
    """
    path = _existing(path)
    if path.is_dir():
        if _is_tiny_imagenet(path):
            return load_tiny_imagenet(path, **kwargs)
        return load_image_folder(path, **kwargs)
    if path.suffix.lower() == ".npz":
        return load_npz(path, **kwargs)
    raise ValueError(f"{path}: cannot tell how to load it; expected a .npz archive or a folder")
