"""`instaaug bench --quick`: every benchmark runs and bench.json holds its figures (not the machine's speed)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math

import pytest
import torch

from instaaug import InstaAug
from instaaug.bench import (
    augment_throughput,
    compare_calls,
    crop_experiment_step,
    make_train_step,
    make_two_pass_step,
    peak_bytes,
    phi_size_ratio,
    uniform_step,
)
from instaaug.cli import main
from instaaug.models import build_classifier

RATIOS = (
    "train_step_ratio_uniform",
    "train_step_ratio_uniform_slim",
    "train_step_ratio_crop",
    "train_step_ratio_crop_slim",
    "augment_throughput_vs_kornia_64x32",
    "augment_throughput_vs_kornia_64x32_backward",
    "augment_throughput_vs_kornia_128x64",
    "augment_throughput_vs_kornia_128x64_backward",
    "colour_throughput_vs_kornia",
    "colour_closed_form_vs_round_trip",
    "tta_batched_speedup",
    "tta_auto_speedup",
    "tta_batched_speedup_resnet18",
    "tta_auto_speedup_resnet18",
    "peak_memory_ratio",
    "train_step_ratio_uniform_small_classifier",
    "train_step_ratio_uniform_slim_small_classifier",
    "train_step_ratio_crop_small_classifier",
    "train_step_ratio_crop_slim_small_classifier",
    "peak_memory_ratio_small_classifier",
    "train_step_ratio_uniform_global",
    "peak_memory_ratio_global",
    "peak_memory_ratio_phi16",
    "peak_memory_ratio_phi16_small_classifier",
    "channels_last_step_ratio_lrp",
    "channels_last_step_ratio_random",
    "channels_last_step_ratio_uniform_instaaug",
    "channels_last_step_ratio_uniform_random",
    "train_step_ratio_uniform_channels_last_small_classifier",
    "train_step_ratio_mixture_vs_uniform",
    "train_step_ratio_flow_vs_uniform",
    "train_step_ratio_uniform_default_small_classifier",
    "train_step_ratio_uniform_phi16_small_classifier",
    "train_step_ratio_uniform_nchw_phi_small_classifier",
    "train_step_ratio_uniform_global_small_classifier",
    "train_step_ratio_uniform_two_pass_small_classifier",
)
#: Written only where the optional ttach package is installed.
TTACH_RATIOS = ("tta_vs_ttach_speedup", "tta_instaaug_vs_ttach_speedup")


def test_bench_quick_writes_every_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    for key in RATIOS:
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["machine"]["torch"] == torch.__version__ and results["quick"] is True
    assert results["uniform_classifier"] == results["crop_classifier"] == "preact_resnet18"
    assert results["uniform_classifier_small_classifier"] == "small_cnn"
    for key in TTACH_RATIOS:
        assert (key in results) == (importlib.util.find_spec("ttach") is not None), key
        assert key not in results or (math.isfinite(results[key]) and results[key] > 0), key
    for key in ("scaling", "scaling_small_classifier"):
        rows = results[key]
        columns = {"batch", "image_size", "seconds_instaaug", "seconds_random", "ratio", "ratio_two_pass"}
        assert rows and all(columns <= set(row) and row["ratio_two_pass"] > 0 for row in rows)
    printed = capsys.readouterr().out
    assert "uniform rotation + colour" in printed and "kornia" in printed and str(out) in printed


def test_compare_calls_times_every_call_round_robin():
    order: list[str] = []
    seconds = compare_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=4, warmup=1)
    assert set(seconds) == {"a", "b"} and order.count("a") == order.count("b") == 5
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # the order rotates between rounds


def test_peak_bytes_sees_tensor_memory():
    def allocate() -> None:
        big = torch.ones(1_000_000)  # 4 MB, freed on return
        del big

    assert 4_000_000 <= peak_bytes(allocate) < 8_000_000


def test_augment_throughput_pipelines_agree_on_shapes():
    for backward in (False, True):
        results = augment_throughput(batch=2, size=16, repeats=1, backward=backward)
        key = "2x16_backward" if backward else "2x16"
        assert results[f"augment_throughput_vs_kornia_{key}"] > 0


def test_crop_experiment_step_trains_and_refuses_unknown_kinds():
    x, y = torch.rand(4, 1, 48, 48), torch.randint(0, 10, (4,))
    for kind in ("lrp", "random"):
        torch.manual_seed(0)
        step = crop_experiment_step(kind, channels_last=True)
        optimisers = inspect.getclosurevars(step).nonlocals["optimisers"]
        params = [p for opt in optimisers.values() for group in opt.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        step(x, y)
        assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))  # the step trains
        convs = [p for p in params if p.dim() == 4 and p.shape[1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    with pytest.raises(ValueError, match="kind"):
        crop_experiment_step("bogus")


def test_phi_size_ratio_compares_default_and_native_phi_per_size():
    rows = phi_size_ratio(sizes=(8, 48), batch=2, repeats=1)
    assert [r["image_size"] for r in rows] == [8, 48]
    assert all(r["ratio_default"] > 0 and r["ratio_native"] > 0 and r["seconds_random"] > 0 for r in rows)


def _optimisers(step) -> dict[str, torch.optim.Optimizer]:
    return inspect.getclosurevars(step).nonlocals["optimisers"]


def test_bench_steps_use_the_optimisers_of_train():
    # make_train_step runs step.train_step with step.make_optimisers (AdamW for f, Adam for φ, train()'s defaults
    # but the learning rate); the two-pass baseline uses the same optimisers.
    torch.manual_seed(0)
    aug = InstaAug(("rotation", "hue"), width=4, depth=2)
    model = build_classifier("small_cnn", 3, 4, width=4, depth=2)
    for make in (make_train_step, make_two_pass_step):
        optimisers = _optimisers(make(model, aug, aug.objective()))
        assert type(optimisers["f"]) is torch.optim.AdamW and type(optimisers["phi"]) is torch.optim.Adam
        assert optimisers["f"].param_groups[0]["weight_decay"] == 0.0
        assert {id(p) for p in optimisers["phi"].param_groups[0]["params"]} == {id(p) for p in aug.parameters()}


@pytest.mark.parametrize("method", ["two_pass", "instaaug_nchw_phi", "instaaug_phi16", "random"])
def test_uniform_steps_train_f_and_phi(method):
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    torch.manual_seed(0)
    step = uniform_step(method, classifier="small_cnn")
    optimisers = _optimisers(step)
    groups = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimisers.items()}
    before = {name: [p.detach().clone() for p in params] for name, params in groups.items()}
    step(x, y)
    for name, params in groups.items():
        changed = [not torch.equal(b, p) for b, p in zip(before[name], params, strict=True)]
        # Every weight of f moves; of φ's, its output layer (which starts at zero, so the backbone's gradient is
        # zero on the first step).
        assert all(changed) if name == "f" else any(changed), name
        assert all(p.requires_grad for p in params)  # the two-pass step unfreezes f after its φ pass
    assert set(groups) == ({"f"} if method == "random" else {"f", "phi"})
    with pytest.raises(ValueError, match="method"):
        uniform_step("bogus")
