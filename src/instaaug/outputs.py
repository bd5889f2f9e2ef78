"""The paths and devices a command is given, checked before any work starts, and output directories that one run
at a time may use.

Every check raises a ``ValueError`` with one line that names what is wrong (the CLI prints it as
``instaaug: error: ...`` and exits with code 2), so that a mistake on the command line costs a second, not a run
that fails minutes later or a traceback:

- ``check_output_dir`` / ``check_output_file``: an ``--out`` that cannot be created or written;
- ``check_input_path``: a ``--data`` that does not exist, or is a folder where a file is expected (or the reverse);
- ``check_device``: a malformed device, or CUDA / MPS on a machine without it;
- ``claimed_output_dir``: a lock file (``.instaaug.lock``) in the output directory, so that two runs never write
  into the same directory at once; a lock left behind by a run that was killed is taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

#: The lock file a run holds in its output directory while it runs (hidden, so data loaders skip it).
LOCK_FILE = ".instaaug.lock"

#: A lock file that cannot be parsed is taken to be in the middle of being written (``os.open`` with ``O_EXCL``
#: creates it empty, then the holder writes its JSON) for this many seconds, and to be left over after that.
UNREADABLE_LOCK_GRACE_S = 10.0

#: How often a claim retries when the lock file changes under it (another process taking over at the same time).
_CLAIM_ATTEMPTS = 5


class StaleLockWarning(UserWarning):
    """A run took over the lock of an earlier run in its output directory that did not finish (its process is gone)
    without ``resume``: the earlier run's partial results are overwritten rather than continued."""


# ------------------------------------------------------------------------------------------------------------------
# Checks that create nothing


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` for a relative path at the latest)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path.cwd()


def _check_can_create_under(path: Path, flag: str, kind: str) -> None:
    """Refuse a ``path`` to be created (``kind``: "directory" or "file") whose ancestors include a file, or whose
    nearest existing ancestor is not a directory this process may write in."""
    ancestor = _nearest_existing(path.parent)
    if ancestor.is_symlink() and not ancestor.exists():
        raise ValueError(f"{flag} {path}: {ancestor} is a broken symbolic link")
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {path}: {ancestor} is a file, so the {kind} cannot be created inside it")
    # Creating an entry needs write and search permission on the directory that will hold it.
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {ancestor}")


def check_output_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Check that ``path`` can serve as an output directory, before any work starts; creates nothing.

    Args:
        path: an existing directory, or one that can be created (with its missing parents).
        flag: the option that gave the path, to name it in the message.
    Returns:
        ``path`` as a ``Path``.
    Raises:
        ValueError (one line, naming the path): it is an existing file (or a broken symbolic link), a file stands
        where one of its parents should be, or this process may not write there.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{flag} {path} is a broken symbolic link")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag} {path} is an existing file, not a directory; choose another {flag}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: no permission to write in this directory")
        return path
    _check_can_create_under(path, flag, "directory")
    return path


def check_output_file(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Check that ``path`` can be written as an output file (e.g. ``instaaug bench --out bench.json``), before any
    work starts; creates nothing. An existing file is fine: it is replaced.

    Raises:
        ValueError (one line, naming the path): it is a directory, a file stands where one of its parents should be,
        or this process may not create files in its directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name, such as {path / 'bench.json'}")
    # Outputs are written atomically (a temporary file renamed over the old one): what matters is the directory.
    _check_can_create_under(path, flag, "file")
    return path


def check_input_path(path: str | os.PathLike, *, kind: Literal["file", "dir"], flag: str = "--data") -> Path:
    """Check that ``path`` exists, is a file (``kind="file"``) or a folder (``kind="dir"``) and can be read.

    Raises:
        ValueError (one line, naming the path): it does not exist, it is of the other kind, or it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{flag} {path} does not exist")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; this command reads a file")
    if kind == "dir" and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; this command reads a folder")
    if not os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)):
        raise ValueError(f"{flag} {path}: no permission to read it")
    return path


def check_device(device: str, *, flag: str = "--set device") -> torch.device:
    """Check that ``device`` names a torch device this machine has, before any work starts.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (or ``xpu``/``xpu:N``).
        flag: how the user gave it, to name it in the message (``--set device`` → ``--set device=cuda: ...``).
    Returns:
        the ``torch.device``.
    Raises:
        ValueError (one line): a malformed device string, a device type other than the above, or a device that is
        not available here (no CUDA, a GPU index beyond the GPUs present, no MPS).
    """
    where = f"{flag}={device}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{where}: not a device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{where}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{where}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return parsed
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{where}: MPS is not available on this machine")
        return parsed
    if parsed.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            raise ValueError(f"{where}: XPU is not available on this machine")
        return parsed
    # meta, hpu, ...: torch parses them, but training on them fails late or means nothing (meta holds no data).
    raise ValueError(f"{where}: device type {parsed.type!r} is not supported; use cpu, cuda, cuda:N or mps")


# ------------------------------------------------------------------------------------------------------------------
# The output directory's lock


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` from field 3 (the state) on, or None where it cannot be read (not Linux, or
    no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields if len(fields) > 19 else None


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None where that cannot be read. Tells a live
    holder from an unrelated process that reuses its pid."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None  # field 22, starttime
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (another user's process counts; a zombie, killed but not yet
    reaped by its parent, does not)."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it on Windows; never take over a lock there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists and belongs to someone else
        return True
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


def _lock_is_stale(info: dict[str, Any] | None, age_s: float) -> bool:
    """Whether a lock (its parsed contents, None if unreadable, and its age) was left by a run that is gone."""
    if info is None:
        return age_s > UNREADABLE_LOCK_GRACE_S
    if info.get("hostname") != socket.gethostname():
        # A process on another host (a shared file system) cannot be checked from here, and a run may last days,
        # so no age makes such a lock safe to take: it stays until that run releases it or a person deletes it.
        return False
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return age_s > UNREADABLE_LOCK_GRACE_S
    if not _pid_alive(pid):
        return True
    recorded, current = info.get("pid_start"), _process_start(pid)
    # Pids are reused: a live process with another start time is not the run that wrote the lock.
    return isinstance(recorded, int) and current is not None and current != recorded


def _read_lock(lock: Path) -> tuple[bytes, dict[str, Any] | None, float] | None:
    """The raw bytes, the parsed contents (None if unreadable) and the age in seconds of ``lock``; None if gone."""
    try:
        raw = lock.read_bytes()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        info = None
    return raw, info if isinstance(info, dict) else None, age


def _describe_holder(info: dict[str, Any] | None) -> str:
    if info is None:
        return "another process (its lock is being written)"
    host = info.get("hostname")
    on_host = f" on {host}" if host != socket.gethostname() else ""
    return f"process {info.get('pid')}{on_host} (started {info.get('started', '?')})"


def _lock_contents() -> bytes:
    info = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pid_start": _process_start(os.getpid()),
        # Makes every claim's contents unique, so a takeover can tell the stale lock it judged from a new one.
        "token": os.urandom(8).hex(),
    }
    return (json.dumps(info) + "\n").encode()


def _acquire(directory: Path, flag: str) -> tuple[bytes, dict[str, Any] | None]:
    """Create ``directory/LOCK_FILE`` atomically; returns its contents and the stale lock taken over (if any)."""
    lock = directory / LOCK_FILE
    contents = _lock_contents()
    taken_over: dict[str, Any] | None = None
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = _read_lock(lock)
            if found is None:
                continue  # released between our open and our read: try again
            raw, info, age = found
            if not _lock_is_stale(info, age):
                # Only a person can tell that a run on another host (or a lock never finished) is gone.
                unsure = info is None or info.get("hostname") != socket.gethostname()
                remedy = f" (if that run is gone, delete {lock})" if unsure else ""
                raise ValueError(
                    f"{flag} {directory} is in use by {_describe_holder(info)}; wait for it or choose another "
                    f"{flag}{remedy}"
                ) from None
            # Take over: move the stale lock aside under a name of our own, then check that what moved is the lock
            # we judged. Another process taking over at the same moment may have replaced it with its own live lock
            # in between: that one is put back, and the next round finds it held.
            aside = directory / f"{LOCK_FILE}.stale.{os.getpid()}.{os.urandom(4).hex()}"
            try:
                os.rename(lock, aside)
            except FileNotFoundError:
                continue
            moved = aside.read_bytes()
            if moved != raw:
                try:
                    os.link(aside, lock)  # put back only if the name is still free
                except FileExistsError:
                    pass
                except OSError:  # no hard links on this file system: rename it back if the name is free
                    if not (lock.exists() or lock.is_symlink()):
                        os.rename(aside, lock)
                aside.unlink(missing_ok=True)
                continue
            aside.unlink(missing_ok=True)
            taken_over = info or {}
            continue
        except PermissionError:
            raise ValueError(f"{flag} {directory}: no permission to create {LOCK_FILE} in it") from None
        with os.fdopen(fd, "wb") as f:
            f.write(contents)
            f.flush()
            os.fsync(f.fileno())
        return contents, taken_over
    raise ValueError(f"{flag} {directory}: could not take its lock {lock}: other processes keep claiming it")


def _release(directory: Path, contents: bytes) -> None:
    """Remove our lock file, unless it no longer holds our contents (never delete another run's lock)."""
    lock = directory / LOCK_FILE
    with contextlib.suppress(FileNotFoundError):
        if lock.read_bytes() == contents:
            lock.unlink()


@contextlib.contextmanager
def claimed_output_dir(path: str | os.PathLike, *, resume: bool, flag: str = "--out") -> Iterator[Path]:
    """Hold the output directory ``path`` for one run: ``with claimed_output_dir(out, resume=False) as out: ...``.

    On entry, the directory is checked (``check_output_dir``), created with its missing parents, and a lock file
    ``LOCK_FILE`` is created in it atomically (``O_CREAT | O_EXCL``), holding JSON with this process's pid, its
    host name, the start time and the process's own start time (Linux). On exit the lock is removed.

    A lock that is already there:

    - held by a live process: ``ValueError`` ("... is in use by process N (started ...); wait for it or choose
      another --out"): two runs never write into one directory at once;
    - left by a process that is gone (same host, and no such pid, or only its zombie, or the pid now belongs to a
      process that started later): stale; it is taken over, race-safely (moved aside, checked, then claimed with
      ``O_EXCL`` again). With ``resume`` this is the expected case (continuing an interrupted run); without it a
      ``StaleLockWarning`` says that the interrupted run's results are overwritten, not continued;
    - written on another host (a shared file system): that process cannot be checked from here and runs may last
      days, so it is always treated as live; the message says which file to delete once that run is known gone;
    - unreadable (being written this instant, or cut short): live for ``UNREADABLE_LOCK_GRACE_S`` seconds after
      it was last written, stale after.

    If the block raises (a failed or refused run) and this call created the directory, the directory is removed
    again when it holds nothing but the lock, and so are the parents this call created when they are empty: a
    failed run leaves no empty output directory behind. Files anyone put there are never deleted.

    Raises:
        ValueError (one line): ``path`` cannot be an output directory, or another live run holds it.
    """
    directory = check_output_dir(path, flag=flag)
    created = [p for p in (directory, *directory.parents) if not (p.exists() or p.is_symlink())]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a race with another process, or a file system that refuses (read-only, full)
        _remove_empty(created)
        raise ValueError(f"{flag} {directory}: cannot create it: {e.strerror or e}") from None
    try:
        contents, stale = _acquire(directory, flag)
    except BaseException:
        _remove_empty(created)
        raise
    if stale is not None and not resume:
        warnings.warn(
            f"{directory} held the lock of a run that did not finish ({_describe_holder(stale)}); starting afresh "
            "over its results (use --resume to continue it instead)",
            StaleLockWarning,
            stacklevel=3,  # this generator ← contextlib's __enter__ ← the caller's `with`
        )
    try:
        yield directory
    except BaseException:
        _release(directory, contents)
        _remove_empty(created)
        raise
    _release(directory, contents)


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories of ``created`` (deepest first) that are empty; stop at the first that is not."""
    for directory in created:
        try:
            directory.rmdir()  # fails on a directory that holds anything: nothing of anyone's is deleted
        except OSError as e:
            if e.errno != errno.ENOENT:
                return
