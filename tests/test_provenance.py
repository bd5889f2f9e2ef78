"""What ``metrics.json`` records about where a result came from (``instaaug.provenance``)."""

from __future__ import annotations

import datetime
import sys

import torch

from instaaug.provenance import command_line, provenance


def test_provenance_records_versions_command_and_data_and_restores_them_after_the_block():
    outside = provenance(seed=3)
    assert outside["torch"] == torch.__version__ and outside["seed"] == 3 and outside["device"] == "cpu"
    assert outside["threads"] == torch.get_num_threads() and outside["world_size"] == 1
    assert outside["data"] == "built-in" and outside["command"].split()[0] == sys.argv[0].split()[0]
    assert datetime.datetime.fromisoformat(outside["time"]).tzinfo is not None
    with command_line(["instaaug", "run", "rotation", "--set", "methods=a b"], data={"path": "x.npz"}):
        inside = provenance(seed=None)
        assert inside["command"] == "instaaug run rotation --set 'methods=a b'"  # shell-quoted, re-runnable
        assert inside["data"] == {"path": "x.npz"}
        assert provenance(data={"path": "y.npz"})["data"] == {"path": "y.npz"}  # the caller's data wins
    after = provenance()
    assert after["data"] == "built-in" and after["command"] == outside["command"]
