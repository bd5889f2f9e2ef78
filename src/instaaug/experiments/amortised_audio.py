"""`instaaug run amortised-audio`: amortised invariance learning on synthesised sounds (log-mel spectrograms).

The data (``instaaug.data.audio``): 1 s clips at 8 kHz, one sound event each, from one of five sources told apart
by timbre, with independent pitch, onset and level. Four downstream tasks need opposite invariances:

- ``source``: the source class (5 classes, accuracy) — pitch, time and level are nuisances;
- ``pitch``: the fundamental in octaves (regression, R²) — pitch invariance should hurt it;
- ``onset``: the event's start in seconds (regression, R²) — time invariance should hurt it;
- ``loudness``: the event's level in dBFS (regression, R²) — level invariance should hurt it.

Views are made on STFT power spectrograms by the sound groups (``timing``, ``pitch``, ``level``; see
``instaaug.audio.augment``) and turned into log-mel spectrograms (40 bands by default) for the backbone. One
``ConditionedResNet`` is pre-trained with SimCLR over the seven corners of {0, 1}³ other than all-off; an
ordinary model of the same architecture with every augmentation (corner 1,1,1 only; at ``ordinary_lr``, lower
than the amortised model's, because at the higher rate its embeddings collapse and its loss stays at chance); and,
with ``task_specific``, one ordinary model per task's own corner (``TASK_CORNERS``: the invariances a task can afford),
the paper's comparison of one amortised model against a model pre-trained for each task. Per task: the probe's
learned i, every fixed corner, a grid search over i (all selected on validation) and the ordinary models. Features
of each fixed i are computed once and shared by every task. With ``seeds`` > 1 every seed is one whole run, as in
``instaaug run amortised``, and ``metrics.json`` holds the mean and standard deviation over the seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..amortised import (
    ConditionedBackbone,
    InvarianceProbe,
    InvarianceSpace,
    PretrainConfig,
    ProbeConfig,
    build_conditioned_backbone,
    extract_features,
    fit_readout,
    metric_name,
    pretrain,
    score,
)
from ..amortised.space import get_group
from ..audio import LogMel, MelConfig, power_spectrogram
from ..data.audio import SOURCES, SynthSounds, plot_examples, synth_sounds
from ..validation import check_int_fields
from .amortised import (
    FLAT_PRETRAIN_PROBE_KEYS,
    check_nested_settings,
    pretrain_record,
    pretrain_settings,
    probe_settings,
    run_seeds_of,
    score_cell,
    seed_summary,
    write_run,
)
from .common import run_on_builtin_data

DESCRIPTION = "amortised invariance on synthesised sounds: learned i for source / pitch / onset / loudness tasks"

#: The tasks: name → (task kind, outputs).
TASKS: dict[str, tuple[str, int]] = {
    "source": ("classification", len(SOURCES)),
    "pitch": ("regression", 1),
    "onset": ("regression", 1),
    "loudness": ("regression", 1),
}
#: Each task's own corner of (timing, pitch, level): every invariance it can afford, none that destroys its target.
TASK_CORNERS: dict[str, str] = {"source": "1,1,1", "pitch": "1,0,1", "onset": "0,1,1", "loudness": "1,1,0"}


@dataclass(frozen=True)
class Config:
    """Settings of the audio amortised experiment (override with ``--set key=value``)."""

    seed: int = 0
    #: an int N: seeds seed, seed + 1, …, seed + N − 1; a list: those seeds. Each seed is a whole run (its own
    #: sounds, weights, views); metrics are the mean and standard deviation over the seeds.
    seeds: int | tuple[int, ...] = 1
    sample_rate: int = 8000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 40
    n_pretrain: int = 2000
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 1000
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    num_kernels: int = 4
    #: FiLM-conditioned normalisations in the ResNet (``ResNetConfig.film``).
    film: bool = False
    #: strengths of the groups (see ``instaaug.audio.augment``): the largest time shift (fraction of the clip),
    #: pitch shift (semitones) and gain (dB); each is about the range of the target its group destroys.
    time_shift: float = 0.25
    semitones: float = 12.0
    gain_db: float = 15.0
    #: the amortised model's contrastive pre-training (``--set pretrain.KEY=VALUE``); the ordinary models use the
    #: same settings but ``ordinary_epochs`` and ``ordinary_lr``. Its ``seed`` and ``device`` are the experiment's.
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(method="simclr", epochs=30, batch_size=128, lr=2e-3, temperature=0.2)
    )
    ordinary_epochs: int = 15
    #: the ordinary models' learning rate: at ``pretrain.lr`` the every-augmentation model stays at the chance loss
    #: (its embeddings collapse); at 5e-4 its NT-Xent falls to about 4.4 (chance ln 255 = 5.54) in 15 epochs.
    ordinary_lr: float = 5e-4
    #: also pre-train one ordinary model per task's corner (``TASK_CORNERS``).
    task_specific: bool = True
    #: also read out the untrained network (the initial weights every model of a seed starts from, at i = all
    #: ones): a random-feature baseline that shows what pre-training adds (``score_untrained``). It is scored after
    #: every other number, which it leaves unchanged.
    untrained: bool = True
    #: the probe and every cached-feature readout (``--set probe.KEY=VALUE``); its ``seed`` and ``device`` are the
    #: experiment's own.
    probe: ProbeConfig = field(
        default_factory=lambda: ProbeConfig(
            epochs=10, batch_size=128, lr=1e-2, i_lr=0.2, parametrisation="clamp", readout_steps=300
        )
    )
    grid_points: int = 3
    tasks: tuple[str, ...] = tuple(TASKS)
    #: torch threads (0: torch's default; 1 per worker process when seeds run in several).
    threads: int = 0
    #: worker processes, one seed each at a time (0: one per available core, at most one per seed).
    workers: int = 0
    device: str = "cpu"
    #: The pre-training and probe keys' old flat names, still accepted (with a DeprecationWarning).
    RENAMED_KEYS: ClassVar[dict[str, str]] = dict(FLAT_PRETRAIN_PROBE_KEYS)

    def __post_init__(self) -> None:
        tasks = self.tasks if not isinstance(self.tasks, str) else tuple(t for t in self.tasks.split(",") if t)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
        object.__setattr__(self, "tasks", tuple(tasks))
        check_int_fields(self, ("n_pretrain", "n_train", "n_val", "n_test", "grid_points"), least=1)
        check_int_fields(self, ("ordinary_epochs",), least=0)
        check_nested_settings(self)
        self.mel()  # validates the spectrogram settings

    def mel(self) -> MelConfig:
        """The log-mel front end's settings."""
        return MelConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels)

    @classmethod
    def quick(cls) -> Config:
        """A seconds-long variant for tests: little data, a tiny network, few epochs."""
        return cls(
            n_mels=24,
            n_pretrain=96,
            n_train=80,
            n_val=40,
            n_test=40,
            widths=(8, 16),
            blocks=(1, 1),
            num_kernels=2,
            pretrain=dataclasses.replace(cls().pretrain, epochs=1, batch_size=48),
            ordinary_epochs=1,
            probe=dataclasses.replace(cls().probe, epochs=1, batch_size=48, readout_steps=30),
            grid_points=2,
        )


def run(config: Config, out_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> dict[str, Any]:
    """Pre-train the amortised and the ordinary models, probe every task, write metrics.json and the figures."""
    return run_on_builtin_data("amortised-audio", _run, config, out_dir, data, uses="built-in synthesised sounds only")


def _spectrograms(sounds: SynthSounds, config: Config) -> torch.Tensor:
    return power_spectrogram(sounds.waveforms, config.n_fft, config.hop)


def _backbone(config: Config, space: InvarianceSpace, inputs: torch.Tensor) -> ConditionedBackbone:
    # The first layer standardises log-mel inputs with statistics of the pre-training clips (never the test ones).
    return build_conditioned_backbone(
        "resnet",
        groups=space.names,
        in_channels=1,
        widths=config.widths,
        blocks=config.blocks,
        num_kernels=config.num_kernels,
        film=config.film,
        input_mean=float(inputs.mean()),
        input_std=float(inputs.std()),
    )


def _space(config: Config) -> InvarianceSpace:
    """The invariance space (timing, pitch, level) at the config's strengths, with the log-mel front end."""
    return InvarianceSpace(
        (
            get_group("timing", shift=config.time_shift),
            get_group("pitch", semitones=config.semitones),
            get_group("level", gain_db=config.gain_db),
        ),
        frontend=LogMel(config.mel()),
    )


def _sounds(config: Config, s: int) -> dict[str, SynthSounds]:
    """The clips of seed s: pre-training, train, val and test (independent draws)."""
    sizes = (("pretrain", config.n_pretrain), ("train", config.n_train), ("val", config.n_val), ("test", config.n_test))
    return {name: synth_sounds(n, 4 * s + k, config.sample_rate) for k, (name, n) in enumerate(sizes)}


def _run(config: Config, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    seeds, records = run_seeds_of(_seed_job, config, out, "amortised-audio")
    results = seed_summary(seeds, records)
    test = synth_sounds(config.n_test, 4 * seeds[0] + 3, config.sample_rate)  # the first seed's test clips
    examples = plot_examples(test, out / "audio_examples.png", config.mel())
    return write_run("amortised-audio", config, out, results, _space(config), [examples.name], started)


def _seed_job(job: tuple[Config, str, int, str]) -> dict[str, Any]:
    """One seed of the experiment: pre-train every model (saved under ``out``) and probe every task."""
    config, _, s, out_dir = job
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sounds = _sounds(config, s)
    space = _space(config)
    power = {name: _spectrograms(v, config) for name, v in sounds.items()}
    inputs = {name: space.prepare(power[name]) for name in ("train", "val", "test")}
    pre_logmel = space.prepare(power["pretrain"])
    plans = [
        ("amortised", space.corner_keys(), config.pretrain.epochs),
        ("ordinary", ["1,1,1"], config.ordinary_epochs),
    ]
    if config.task_specific:
        extra = sorted({TASK_CORNERS[t] for t in config.tasks} - {"1,1,1"})
        plans += [(f"ordinary_{key}", [key], config.ordinary_epochs) for key in extra]
    models: dict[str, ConditionedBackbone] = {}
    methods: dict[str, dict[str, Any]] = {}
    model_corner: dict[str, tuple[float, ...]] = {}
    for name, keys, epochs in plans:
        model_space = InvarianceSpace(
            space.groups, corners=[[int(v) for v in k.split(",")] for k in keys], frontend=space.frontend
        )
        torch.manual_seed(s)
        model = _backbone(config, model_space, pre_logmel)
        t0 = time.perf_counter()
        lr = config.pretrain.lr if name == "amortised" else config.ordinary_lr
        settings = pretrain_settings(config, s, epochs, lr)
        result = pretrain(model, model_space, power["pretrain"], settings)
        model.save(out / name)
        models[name] = model
        model_corner[name] = tuple(float(v) for v in keys[0].split(","))
        methods[name] = pretrain_record(model, model_space, result, settings.batch_size, time.perf_counter() - t0)
    readouts = _Readouts(models, inputs, sounds, probe_settings(config, s))
    tasks = {task: _probe_task(config, task, space, readouts, model_corner) for task in config.tasks}
    if config.untrained:
        torch.manual_seed(s)
        readouts.models["untrained"] = _backbone(config, space, pre_logmel).eval()
        ones = (1.0,) * space.dim
        for task, record in tasks.items():
            record["score_untrained"] = readouts.fixed("untrained", ones, task)["test"]
    return {"methods": methods, "tasks": tasks}


class _Readouts:
    """Readouts on cached features: the features of train, val and test under a fixed i are computed once per
    (model, i) and shared by every task."""

    def __init__(
        self,
        models: dict[str, ConditionedBackbone],
        inputs: dict[str, torch.Tensor],
        sounds: dict[str, SynthSounds],
        probe_config: ProbeConfig,
    ) -> None:
        self.models, self.inputs, self.sounds, self.probe_config = models, inputs, sounds, probe_config
        self.cache: dict[tuple[str, tuple[float, ...]], list[torch.Tensor]] = {}

    def features(self, model: str, i: tuple[float, ...]) -> list[torch.Tensor]:
        """Features (N, D) of train, val and test under the fixed i."""
        if (model, i) not in self.cache:
            device = self.probe_config.device
            self.cache[model, i] = [
                extract_features(self.models[model], self.inputs[p], list(i), device=device)
                for p in ("train", "val", "test")
            ]
        return self.cache[model, i]

    def fixed(self, model: str, i: tuple[float, ...], task: str) -> dict[str, float]:
        """``{"val", "test"}`` scores of a readout fitted at the fixed i of ``model`` (selected on val)."""
        kind, k = TASKS[task]
        ys = [self.sounds[p].target(task) for p in ("train", "val", "test")]
        h = self.features(model, i)
        readout, val = fit_readout((h[0], ys[0]), (h[1], ys[1]), kind, k, self.probe_config)
        with torch.no_grad():
            return {"val": val, "test": score(readout(h[2]), ys[2], kind)}


def _probe_task(
    config: Config,
    task: str,
    space: InvarianceSpace,
    readouts: _Readouts,
    model_corner: dict[str, tuple[float, ...]],
) -> dict[str, Any]:
    """One task's record: the learned i and its score, each corner's, the grid search's and the ordinary models'."""
    kind, k = TASKS[task]
    t0 = time.perf_counter()
    corner_tuples = {key: tuple(float(v) for v in key.split(",")) for key in space.corner_keys()}
    values = [k / (config.grid_points - 1) for k in range(config.grid_points)] if config.grid_points > 1 else [0.5]
    train, val, test = ((readouts.inputs[p], readouts.sounds[p].target(task)) for p in ("train", "val", "test"))
    corner_scores = {key: readouts.fixed("amortised", i, task) for key, i in corner_tuples.items()}
    grid = [(i, readouts.fixed("amortised", i, task)) for i in itertools.product(values, repeat=space.dim)]
    grid_i, grid_best = max(grid, key=lambda item: item[1]["val"])
    torch.manual_seed(readouts.probe_config.seed)
    probe = InvarianceProbe(readouts.models["amortised"], kind, k, readouts.probe_config)
    probe.fit(train, val)
    # an ordinary model is read at the one corner it was trained at
    ordinary = {name: readouts.fixed(name, model_corner[name], task) for name in readouts.models if name != "amortised"}
    own = "ordinary" if TASK_CORNERS[task] == "1,1,1" else f"ordinary_{TASK_CORNERS[task]}"
    return {
        "metric": metric_name(kind),
        "learned_i": probe.learned_i(),
        "score_learned": probe.score(*test),
        "score_corners": {key: v["test"] for key, v in corner_scores.items()},
        "score_grid": grid_best["test"],
        "grid_i": dict(zip(space.names, grid_i, strict=True)),
        "score_ordinary": ordinary["ordinary"]["test"],
        "task_corner": TASK_CORNERS[task],
        "score_task_specific": ordinary[own]["test"] if own in ordinary else None,
        "score_ordinary_models": {name: v["test"] for name, v in ordinary.items()},
        "val_corners": {key: v["val"] for key, v in corner_scores.items()},
        "val_learned": max(h["val"] for h in probe.history) if probe.history else None,
        "i_trajectory": [h["i"] for h in probe.history],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summary(metrics: dict[str, Any]) -> str:
    """A short table: per task the learned i and its score, each corner's, the grid search's, the ordinary
    model's (every augmentation), the task-specific model's and the untrained network's (mean ± std over the seeds
    when there are several)."""
    tasks = metrics["tasks"]
    first = next(iter(tasks.values()))
    corners = list(first["score_corners"])
    wide = 6 if first.get("seeds", 1) > 1 else 0
    head = f"{'task':9s} {'metric':8s} {'learned i':>15s} {'learned':>{8 + wide}s} "
    head += " ".join(f"{c:>{6 + wide}s}" for c in corners)
    lines = [head + f" {'grid':>{6 + wide}s} {'ordin.':>{6 + wide}s} {'task-sp.':>{8 + wide}s} {'untr.':>{6 + wide}s}"]
    for name, t in tasks.items():
        i = ",".join(f"{v:.2f}" for v in t["learned_i"].values())
        row = f"{name:9s} {t['metric']:8s} {i:>15s} {score_cell(t, 'score_learned', 8 + wide)} "
        row += " ".join(score_cell(t, "score_corners", 6 + wide, c) for c in corners)
        row += f" {score_cell(t, 'score_grid', 6 + wide)} {score_cell(t, 'score_ordinary', 6 + wide)} "
        row += f"{score_cell(t, 'score_task_specific', 8 + wide)} {score_cell(t, 'score_untrained', 6 + wide)}"
        lines.append(row)
    return "\n".join(lines)


__all__ = ["DESCRIPTION", "TASKS", "TASK_CORNERS", "Config", "run", "summary"]
