"""instaaug.outputs: checks of output and input paths and devices, and the lock that keeps one run per directory."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import torch

from conftest import write_lock as _write_lock
from instaaug import outputs
from instaaug.outputs import (
    LOCK_FILE,
    StaleLockWarning,
    check_device,
    check_input_path,
    check_output_dir,
    check_output_file,
    claimed_output_dir,
)


def test_check_functions_create_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_dir(target) == target
    assert check_output_file(target / "x.json") == target / "x.json"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        check_input_path(tmp_path / "f", kind="dir")
    assert check_input_path(tmp_path / "f", kind="file") == tmp_path / "f"
    assert check_input_path(tmp_path, kind="dir") == tmp_path
    with pytest.raises(ValueError, match="broken symbolic link"):
        (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
        check_output_dir(tmp_path / "dangling")


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    for bad, match in [("cuda:x", "not a device"), ("", "not a device"), ("meta", "not supported")]:
        with pytest.raises(ValueError, match=match):
            check_device(bad)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path, 2**22 + 12345, hostname="another-host.invalid")
    with (
        pytest.raises(ValueError, match=rf"on another-host\.invalid .*delete {tmp_path / LOCK_FILE}"),
        claimed_output_dir(tmp_path, resume=True),
    ):
        pass


def test_stale_lock_without_resume_warns(tmp_path):
    _write_lock(tmp_path, 2**22 + 12345)  # above Linux's largest pid: no such process
    with pytest.warns(StaleLockWarning, match="did not finish"), claimed_output_dir(tmp_path, resume=False):
        pass


def test_unreadable_lock_is_held_while_fresh_then_stale(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")  # another process between O_EXCL and writing its JSON
    with pytest.raises(ValueError, match="in use by another process"), claimed_output_dir(tmp_path, resume=True):
        pass
    old = lock.stat().st_mtime - 2 * outputs.UNREADABLE_LOCK_GRACE_S
    os.utime(lock, (old, old))
    with claimed_output_dir(tmp_path, resume=True):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_killed_but_unreaped_process_does_not_hold_the_lock(tmp_path):
    if outputs._proc_stat(os.getpid()) is None:
        pytest.skip("no /proc: process states cannot be read here")
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while (outputs._proc_stat(zombie.pid) or ["Z"])[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)  # exited, not yet waited for: a zombie, which os.kill(pid, 0) still finds
        _write_lock(tmp_path, zombie.pid)
        with claimed_output_dir(tmp_path, resume=True):
            pass
    finally:
        zombie.wait()


def test_a_reused_pid_does_not_hold_the_lock(tmp_path):
    if outputs._process_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times cannot be read here")
    lock = _write_lock(tmp_path, os.getpid())
    info = json.loads(lock.read_text())
    lock.write_text(json.dumps({**info, "pid_start": outputs._process_start(os.getpid()) - 1}))
    with claimed_output_dir(tmp_path, resume=True):
        pass
    with (
        claimed_output_dir(tmp_path, resume=True),
        pytest.raises(ValueError, match=f"process {os.getpid()}"),
        claimed_output_dir(tmp_path, resume=True),  # the same live process, twice: refused
    ):
        pass
