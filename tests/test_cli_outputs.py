"""The command line a user can trust: mistakes refused before any work as one line and exit code 2, one run per
output directory through the CLI (the lock itself: test_outputs.py), `instaaug show EXPERIMENT`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import instaaug.bench
from conftest import write_lock as _write_lock
from instaaug import cli, outputs
from instaaug.cli import main
from instaaug.config_files import config_help
from instaaug.experiments import get_experiment, rotation
from instaaug.outputs import (
    LOCK_FILE,
    claimed_output_dir,
)
from instaaug.train import TrainConfig

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _refused(capsys, argv: list[str], match: str) -> str:
    """Run the CLI with ``argv``; assert exit code 2 and exactly one stderr line matching ``match``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("instaaug: error: ") and match in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def fake_rotation(monkeypatch):
    """Make `instaaug run rotation` instant: its run() records what it saw instead of training."""
    seen: dict = {}

    def run(config, out_dir, data=None):
        lock = Path(out_dir) / LOCK_FILE
        seen["lock"] = json.loads(lock.read_text()) if lock.exists() else None
        seen["out"] = Path(out_dir)
        if seen.get("fail"):
            raise ValueError("the run failed")
        return {"methods": {}}

    monkeypatch.setattr(rotation, "run", run)
    monkeypatch.setattr(rotation, "summary", lambda metrics: "summary")
    return seen


# ------------------------------------------------------------------------------------------------------------------
# Mistakes: one line, exit code 2, nothing left behind


def test_run_mistakes_are_one_line_and_leave_no_directory(tmp_path, capsys, no_gpu, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("user data")
    (tmp_path / "folder").mkdir()
    out = tmp_path / "new" / "out"
    run = ["run", "rotation", "--quick"]
    cases = [
        ([*run, "--out", "afile"], "--out afile is an existing file"),
        ([*run, "--out", "afile/sub"], "afile is a file"),
        ([*run, "--out", str(out), "--data", "missing.npz"], "--data missing.npz does not exist"),
        ([*run, "--out", str(out), "--data", "folder"], "--data folder is a folder"),
        ([*run, "--out", str(out), "--set", "device=cuda"], "--set device=cuda: CUDA is not available on this machine"),
        ([*run, "--out", str(out), "--set", "device=mps"], "--set device=mps: MPS is not available"),
        ([*run, "--out", str(out), "--set", "train.device=cuda"], "--set train.device=cuda: CUDA is not available"),
        ([*run, "--out", str(out), "--set", "device=gpu0"], "--set device=gpu0: not a device"),
        # An experiment that takes no --data refuses it itself, inside the claimed directory: created, then removed.
        (["run", "colour", "--quick", "--out", str(out), "--data", "afile"], "takes no --data"),
    ]
    for argv, match in cases:
        _refused(capsys, argv, match)
        assert not (tmp_path / "new").exists(), argv
    assert (tmp_path / "afile").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]


@pytest.mark.skipif(ROOT, reason="root writes anywhere: permissions cannot refuse it")
def test_unwritable_out_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _refused(capsys, ["run", "rotation", "--out", str(locked / "run")], f"no permission to write in {locked}")
        _refused(capsys, ["run", "rotation", "--out", str(locked)], "no permission to write")
        _refused(capsys, ["bench", "--out", str(locked / "b.json")], "no permission to write")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unwritable_out_is_refused_whoever_runs(tmp_path, capsys, monkeypatch):
    """The same refusal where the file system says no (os.access), also when the tests run as root."""
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    line = _refused(capsys, ["run", "rotation", "--out", str(tmp_path / "a" / "b")], "no permission to write in")
    assert str(tmp_path) in line
    assert not (tmp_path / "a").exists()


def test_bench_refuses_a_bad_out_before_any_benchmark(tmp_path, capsys, monkeypatch, no_gpu):
    def never(*args, **kwargs):
        raise AssertionError("the benchmarks must not start")

    monkeypatch.setattr(instaaug.bench, "run_benchmarks", never)
    (tmp_path / "afile").write_text("")
    _refused(capsys, ["bench", "--quick", "--out", str(tmp_path)], f"--out {tmp_path} is a directory")
    _refused(capsys, ["bench", "--quick", "--out", str(tmp_path / "afile" / "b.json")], "is a file")
    _refused(capsys, ["bench", "--quick", "--out", str(tmp_path / "b.json"), "--device", "cuda"], "CUDA is not")


# ------------------------------------------------------------------------------------------------------------------
# One run per output directory


def test_run_holds_the_lock_while_it_runs_and_releases_it(tmp_path, capsys, fake_rotation):
    out = tmp_path / "out"
    assert main(["run", "rotation", "--quick", "--out", str(out)]) == 0
    lock = fake_rotation["lock"]
    assert lock["pid"] == os.getpid() and lock["hostname"] == socket.gethostname() and lock["started"]
    assert list(out.iterdir()) == []  # released; the (fake) run wrote nothing


def test_a_failed_run_removes_the_directory_it_created_but_never_user_files(tmp_path, capsys, fake_rotation):
    fake_rotation["fail"] = True
    out = tmp_path / "a" / "b"
    _refused(capsys, ["run", "rotation", "--quick", "--out", str(out)], "the run failed")
    assert fake_rotation["lock"]["pid"] == os.getpid()
    assert not (tmp_path / "a").exists()
    # A directory that was there before stays, with what it holds.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _refused(capsys, ["run", "rotation", "--quick", "--out", str(tmp_path / "mine")], "the run failed")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    # A run that wrote something before it failed keeps it.
    with pytest.raises(RuntimeError), claimed_output_dir(tmp_path / "c" / "d", resume=False) as claimed:
        (claimed / "partial.json").write_text("{}")
        raise RuntimeError("late failure")
    assert [p.name for p in (tmp_path / "c" / "d").iterdir()] == ["partial.json"]


def test_only_rank_0_takes_the_lock(tmp_path, capsys, fake_rotation, monkeypatch):
    monkeypatch.setattr(cli.distributed, "is_main_process", lambda: False)
    assert main(["run", "rotation", "--quick", "--out", str(tmp_path)]) == 0
    assert fake_rotation["lock"] is None
    assert capsys.readouterr().out == ""  # ranks other than 0 print nothing


def test_a_second_run_into_the_same_out_is_refused_while_the_first_lives(tmp_path, capsys, fake_rotation):
    holder = subprocess.Popen(["sleep", "30"])
    try:
        lock = _write_lock(tmp_path / "out", holder.pid)
        before = lock.read_bytes()
        for resume in ([], ["--resume"]):
            line = _refused(
                capsys, ["run", "rotation", "--quick", "--out", str(tmp_path / "out"), *resume], "is in use by"
            )
            assert f"process {holder.pid} (started 2024-01-02T03:04:05+00:00)" in line
            assert "wait for it or choose another --out" in line
        assert "lock" not in fake_rotation  # the run never started
        assert lock.read_bytes() == before  # the holder's lock is untouched
    finally:
        holder.kill()
        holder.wait()
    # Its process gone, the lock is stale: the next run takes it over (with a note, since it does not resume).
    assert main(["run", "rotation", "--quick", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("instaaug: note: ") and "--resume" in err and len(err.splitlines()) == 1
    assert fake_rotation["lock"]["pid"] == os.getpid()
    assert not lock.exists()


_KILLED_RUN = """
import os, signal, sys
from instaaug.outputs import claimed_output_dir
with claimed_output_dir(sys.argv[1], resume=False):
    print("claimed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_left_by_a_killed_run_does_not_block_resume(tmp_path, capsys, fake_rotation):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(out)], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "claimed\n", killed.stderr
    left = json.loads((out / LOCK_FILE).read_text())
    assert left["hostname"] == socket.gethostname() and left["pid"] != os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming an interrupted run is the expected case: no warning
        with claimed_output_dir(out, resume=True) as claimed:
            assert json.loads((claimed / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()
    # And through the command line.
    (out / LOCK_FILE).write_text(json.dumps(left))
    assert main(["run", "rotation", "--quick", "--resume", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert fake_rotation["lock"]["pid"] == os.getpid() and not (out / LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------------------------
# instaaug show


def test_show_lists_every_key_with_its_default_and_meaning(capsys):
    assert main(["show", "crop"]) == 0
    out = capsys.readouterr().out
    keys = re.findall(r"^  ([\w.]+) = ", out, flags=re.MULTILINE)  # meanings are indented by 6 spaces
    nested = {"train": [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]}  # a group's keys in its place
    fields = dataclasses.fields(get_experiment("crop").Config)
    assert keys == [key for f in fields for key in nested.get(f.name, [f.name])]
    assert "  seeds = 3  (--quick: 1)\n" in out
    assert "or the seeds themselves (``--set seeds=0,4``)" in out and "The data are the same for every seed" in out
    assert "  box_scale = 1.4\n" in out and "receptive field" in out
    assert "  train.channels_last = true\n" in out and "  levels = 2\n" in out and "  train.progress = null\n" in out
    assert "  methods = none,random,augerino," in out
    methods = out.split("in reporting order:\n", 1)[1].split("config keys", 1)[0]  # the registry, with summaries
    assert [line.split()[0] for line in methods.splitlines()] == list(get_experiment("crop").METHODS)
    assert "  instaaug-class    LRP crops, one learned distribution per class (ablation)\n" in methods
    assert main(["show", "colour"]) == 0  # meanings from an Attributes: docstring section
    out = capsys.readouterr().out
    assert "  n_test = 1800  (--quick: 270)\n      generated training and test images" in out


def test_show_unknown_experiment(capsys):
    _refused(capsys, ["show", "nope"], "unknown experiment 'nope'")


def test_help_points_to_show(capsys):
    for argv in (["--help"], ["run", "--help"], ["list", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "instaaug show EXPERIMENT" in " ".join(capsys.readouterr().out.split()), argv


@dataclasses.dataclass
class _Base:
    """A base.

    Attributes:
        alpha, beta: two keys documented together,
            over two lines.
        gamma: overridden below.

    Returns:
        nothing: this section is not an attribute.
    """

    alpha: int = 1
    beta: float = 0.5
    gamma: str = "g"


@dataclasses.dataclass
class _Config(_Base):
    #: the comment above,
    #: joined over lines.
    gamma: str = "own"
    # a plain comment is not documentation
    delta: tuple[int, ...] = (1, 2)
    epsilon: bool = True  #: a comment at the end of the line.
    #: far above, a blank line between

    zeta: list[int] = dataclasses.field(default_factory=lambda: [3])
    eta: int = dataclasses.field(default=0, metadata={"unused": True})


def test_config_help_reads_comments_then_the_docstring():
    rows = config_help(_Config)
    assert [name for name, _, _ in rows] == ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
    meanings = {name: meaning for name, _, meaning in rows}
    assert meanings["alpha"] == meanings["beta"] == "two keys documented together, over two lines."
    assert meanings["gamma"] == "the comment above, joined over lines."
    assert meanings["delta"] == "" and meanings["zeta"] == "" and meanings["eta"] == ""
    assert meanings["epsilon"] == "a comment at the end of the line."
    defaults = {name: default for name, default, _ in rows}
    assert defaults == {
        "alpha": 1,
        "beta": 0.5,
        "gamma": "own",
        "delta": (1, 2),
        "epsilon": True,
        "zeta": [3],
        "eta": 0,
    }
    assert "nothing" not in meanings
    with pytest.raises(TypeError):
        config_help(_Config())
