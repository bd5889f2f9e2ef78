"""Files: atomic writes, safetensors weights and JSON metadata. Nothing here ever unpickles."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates files readable by the owner only; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


#: The largest JSON file ``read_json`` reads by default: a config or metadata file is a few kB, so anything
#: bigger is not one, and is refused before it is read into memory.
MAX_JSON_BYTES = 4 * 2**20


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file of at most ``max_bytes`` bytes, with a ValueError naming the file when it is too big,
    malformed or nested too deeply (a FileNotFoundError when it is missing)."""
    path = Path(path)
    raw = _read_existing(path, max_bytes)
    try:
        return json.loads(raw)
    except RecursionError:
        # json parses recursively: nesting deeper than Python's recursion limit overflows its stack.
        raise ValueError(f"{path} is not a usable JSON file: it is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer with too many digits
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    # safetensors refuses views and tensors sharing storage (tied weights): store contiguous copies.
    data = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    return save_safetensors_bytes(data, metadata=metadata)


def _read_existing(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``; with ``max_bytes``, a bigger file is refused before it is read into memory."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if max_bytes is None:
        return path.read_bytes()
    size = path.stat().st_size
    if size <= max_bytes:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)  # bounded even if the file grew since stat
        size = len(raw)
    if size > max_bytes:
        raise ValueError(f"{path} is too big: {size} bytes, more than the {max_bytes} bytes allowed")
    return raw


_PICKLE_HINT = (
    " which can run arbitrary code when loaded: instaaug never unpickles. Convert trusted files with"
    " instaaug.io.load_foreign_weights."
)


def _format_hint(raw: bytes) -> str:
    """A hint naming the format of a refused file when its first bytes identify it; nothing otherwise.

    Only exact signatures count, so that random bytes or text are never described as a pickle: a pickle of
    protocol 2 or later starts with the PROTO opcode (0x80) and its protocol (2 … 5); ``torch.save`` writes a zip
    archive (``PK\\x03\\x04``) whose ``data.pkl`` member is a pickle. Reading a zip's member names runs nothing.
    """
    if len(raw) >= 2 and raw[0] == 0x80 and 2 <= raw[1] <= 5:
        return f" It looks like a pickle file (protocol {raw[1]}, as pickle.dump writes),{_PICKLE_HINT}"
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(BytesIO(raw)) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return " It starts like a zip archive but is not a readable one."
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return f" It looks like a torch.save file (a zip archive holding a pickle),{_PICKLE_HINT}"
        return " It is a zip archive."
    return ""


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a flat dict of tensors as safetensors."""
    atomic_write_bytes(path, _safetensors_bytes(tensors))


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, max_bytes: int | None = None
) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or foreign file gives a clear error (never unpickles).

    With ``max_bytes``, a bigger file is refused (a ValueError) before it is read.
    """
    path = Path(path)
    raw = _read_existing(path, max_bytes)
    try:
        tensors = load_safetensors_bytes(raw)
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(
            f"{path} is not a valid safetensors file (truncated, corrupted or another format): {e}.{_format_hint(raw)}"
        ) from None
    return {k: v.to(device) for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints: nested state (dicts, lists, tensors, plain values) in one safetensors file. Tensors are stored as
# tensors; everything else goes to a JSON skeleton in the file's metadata, so the file is written atomically as a
# whole and reading it never unpickles.

_SKELETON_KEY = "instaaug.skeleton"
_TENSOR_TAG = "__tensor__"


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj
        return {_TENSOR_TAG: path}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_flatten(k, f"{path}.k{i}", tensors), _flatten(v, f"{path}.{i}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, list | tuple):
        tag = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {tag: [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {path!r} in a checkpoint")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if _TENSOR_TAG in node:
            return tensors[node[_TENSOR_TAG]]
        if "__dict__" in node:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in node["__dict__"]}
        if "__list__" in node:
            return [_unflatten(v, tensors) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(_unflatten(v, tensors) for v in node["__tuple__"])
        raise ValueError(f"unexpected node in checkpoint skeleton: {sorted(node)}")
    return node


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write nested state (e.g. ``{"model": model.state_dict(), "epoch": 3}``) to one file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    atomic_write_bytes(path, _safetensors_bytes(tensors, metadata={_SKELETON_KEY: json.dumps(skeleton)}))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by ``save_checkpoint``; a truncated, corrupted or foreign file gives a ValueError."""
    path = Path(path)
    raw = _read_existing(path)
    try:
        tensors = load_safetensors_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
        skeleton = json.loads(metadata[_SKELETON_KEY])
        state = _unflatten(skeleton, {k: v.to(device) for k, v in tensors.items()})
    except (SafetensorError, ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not a valid instaaug checkpoint (truncated, corrupted or foreign): {e}.{_format_hint(raw)}"
        ) from None
    return state


def load_foreign_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors from a file made elsewhere: safetensors, or a ``torch.save`` file read with ``weights_only=True``.

    ``weights_only=True`` makes torch's unpickler accept only tensors and plain containers, so a file whose pickle
    would construct anything else (e.g. run a function) is refused with a ValueError before any of it runs. Returns
    a flat ``{name: tensor}`` dict (e.g. a state dict); nested containers are flattened with dotted names and
    plain non-tensor values (ints, strings, None) are left out.
    """
    path = Path(path)
    raw = _read_existing(path)
    try:
        tensors = load_safetensors_bytes(raw)
    except (SafetensorError, ValueError, OSError):
        pass  # not safetensors: try torch's restricted unpickler below
    else:
        return {k: v.to(device) for k, v in tensors.items()}
    try:
        with warnings.catch_warnings():
            # Plain pickles (protocol > 2) only warn that the restricted unpickler might not know every opcode.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(BytesIO(raw), map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} was refused: not safetensors, and not a weights-only torch file ({first}). Files that need full"
            " unpickling can run arbitrary code; instaaug does not load them."
        ) from None
    flat: dict[str, torch.Tensor] = {}
    _collect_tensors(obj, "", flat, path)
    return flat


def _collect_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor], path: Path) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _collect_tensors(v, f"{prefix}.{k}" if prefix else str(k), out, path)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _collect_tensors(v, f"{prefix}.{i}" if prefix else str(i), out, path)
    elif not (obj is None or isinstance(obj, bool | int | float | str)):
        raise ValueError(f"{path} holds a {type(obj).__name__} at {prefix!r}; expected tensors and plain containers")
