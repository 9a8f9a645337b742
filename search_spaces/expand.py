"""Expansion: a validated StudySpec -> the StudyPlan the orchestrator runs.

- **grid**: the cross product of every grid (list-valued field), in field order (the first
  swept field varies slowest), times the seeds (innermost).
- **random**: ``search.num_samples`` draws of every distribution, made up front from
  ``numpy.random.default_rng(search.seed)`` in field order, each draw crossed with the grids and
  the seeds. No adaptive searcher is involved, so the trials are known (and resumable) up front.
  Identical configurations (e.g. repeated choices) are run once.
- **optuna**: the trials are chosen while the study runs, by Tune's OptunaSearch over
  :class:`OptunaPlan` (each suggestion run once per seed through Tune's Repeater). Only pruning
  fields may be swept (validated at load), so one set of baselines matches every Optuna trial.

Baselines: unless ``baselines: false``, every distinct non-pruning configuration gets one
unpruned trial per seed (``trainables.config.baseline_of``; equal ``baseline_key``). They come
first in ``StudyPlan.trials``, so gains can be computed early. All orders are deterministic.

Resolved here, once: a schedule trial whose ``pruning.layers`` is empty gets the model's paper
default layers (the model registry's ``trainables.models.schedule_layers``), so every
schedule trial's config states the layers it prunes and its derived schedule facts (pruning rate,
number of events) follow from the config alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.cross import SECTION_TYPES, SECTIONS, all_swept, is_section, is_section_grid
from search_spaces.spec import ResourcesSpec, StudySpec
from search_spaces.sweeps import Dist, DistKind, Grid, plain, sample
from trainables.coerce import parse_mapping
from trainables.config import TrialConfig, baseline_of
from trainables.identity import baseline_key, trial_key
from trainables.models import schedule_layers
from trainables.problems import Problems

__all__ = ["OptunaPlan", "StudyPlan", "expand"]


@dataclass(frozen=True)
class OptunaPlan:
    """What the orchestrator needs to build an OptunaSearch experiment.

    ``base`` is a valid ``TrialConfig.to_dict()`` whose searched leaves hold placeholders (their
    first candidate); ``distributions`` maps dotted paths into that dict (``pruning.target``) to
    ``(kind, args)`` as in :class:`search_spaces.sweeps.Dist` (a grid under pruning becomes a
    choice). Each of the ``num_samples`` suggestions runs once per seed: ``num_trials`` in all.
    """

    base: dict[str, Any]
    distributions: tuple[tuple[str, DistKind, tuple[Any, ...]], ...]
    num_samples: int
    seeds: tuple[int, ...]
    metric: str
    mode: str
    seed: int

    @property
    def num_trials(self) -> int:
        return self.num_samples * len(self.seeds)


@dataclass(frozen=True)
class StudyPlan:
    """The expanded study: fixed trials (baselines first), an optional Optuna part, and settings."""

    spec_hash: str
    trials: tuple[TrialConfig, ...]
    optuna: OptunaPlan | None
    resources: ResourcesSpec
    max_concurrent_trials: int | None
    checkpoint_frequency: int
    retries: int
    report_batch_s: float = 0.0

    @property
    def pruned(self) -> tuple[TrialConfig, ...]:
        return tuple(t for t in self.trials if not t.is_baseline)

    @property
    def baselines(self) -> tuple[TrialConfig, ...]:
        return tuple(t for t in self.trials if t.is_baseline)


def expand(spec: StudySpec) -> StudyPlan:
    """Expand a validated spec into its plan (see the module docstring for the rules)."""
    swept = all_swept(spec)
    points = _points(spec)
    optuna = None
    build = _Builder(spec)
    if spec.search.algorithm == "optuna":
        first = {where: dist.args[0] for where, dist in swept if isinstance(dist, Dist)}
        base = build.config(points[0], 0, first, spec.seeds[0])
        optuna = OptunaPlan(
            base=base.to_dict(),
            distributions=tuple(_as_distribution(w, v) for w, v in swept),
            num_samples=spec.search.num_samples,
            seeds=spec.seeds,
            metric=spec.search.metric,
            mode=spec.search.mode,
            seed=spec.search.seed,
        )
        searched = [base]
    else:
        draws: list[dict[str, Any]] = [{}]
        dists = [(where, v) for where, v in swept if isinstance(v, Dist)]
        if dists:
            rng = np.random.default_rng(spec.search.seed)
            draws = [{w: sample(d, rng) for w, d in dists} for _ in range(spec.search.num_samples)]
        searched = [
            build.config(point, i, draw, seed)
            for point in points
            for i, draw in enumerate(draws)
            for seed in spec.seeds
        ]
    baselines = _baselines(searched, spec.seeds) if spec.baselines else []
    trials = [] if optuna else searched
    return StudyPlan(
        spec_hash=spec.hash,
        trials=_unique(baselines + trials),
        optuna=optuna,
        resources=spec.resources,
        max_concurrent_trials=spec.max_concurrent_trials,
        checkpoint_frequency=spec.checkpoint_frequency,
        retries=spec.retries,
        report_batch_s=spec.report_batch_s,
    )


@dataclass(frozen=True)
class _Draw:
    """Placeholder for a distribution's value in a grid point, filled per draw."""

    where: str


def _points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every grid point: the cross product of the sections' points, dataset varying slowest."""
    per_section = []
    for name in SECTIONS:
        section = getattr(spec, name)
        items = [(section, name)]
        if isinstance(section, Grid):
            items = [(item, f"{name}[{i}]") for i, item in enumerate(section.values)]
        per_section.append([p for item, where in items for p in _section_points(item, where)])
    return [dict(zip(SECTIONS, combo, strict=True)) for combo in itertools.product(*per_section)]


def _section_points(node: Any, where: str) -> list[dict[str, Any]]:
    """Plain dicts of one section, one per combination of its grids (fields in order)."""
    names, options = [], []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        at = f"{where}.{f.name}"
        if is_section_grid(value):
            opts = [
                p
                for i, item in enumerate(value.values)
                for p in _section_points(item, f"{at}[{i}]")
            ]
        elif is_section(value):
            opts = _section_points(value, at)
        elif isinstance(value, Grid):
            opts = [plain(v) for v in value.values]
        elif isinstance(value, Dist):
            opts = [_Draw(at)]
        else:
            opts = [plain(value)]
        names.append(f.name)
        options.append(opts)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*options)]


def _baselines(trials: list[TrialConfig], seeds: tuple[int, ...]) -> list[TrialConfig]:
    """One unpruned trial per seed for each distinct non-pruning configuration, in first-seen order."""
    out, seen = [], set()
    for trial in trials:
        key = baseline_key(trial)
        if key not in seen:
            seen.add(key)
            out.extend(baseline_of(trial, seed) for seed in seeds)
    return out


def _unique(trials: list[TrialConfig]) -> tuple[TrialConfig, ...]:
    seen: dict[str, TrialConfig] = {}
    for trial in trials:
        seen.setdefault(trial_key(trial), trial)
    return tuple(seen.values())


class _Builder:
    """Builds the trial configs: a grid point with its distribution placeholders filled from a
    draw, the seed, and the model's default layers where a schedule trial lists none.

    Fast for many trials: each distinct section value is parsed (type-checked) once and shared by
    every trial that has it; only the seed differs between a point's trials."""

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        self._sections: dict[tuple[str, int, int], Any] = {}
        self._layers: dict[tuple[int, str, float, str], Any] = {}

    def config(
        self, point: dict[str, Any], draw_index: int, draw: dict[str, Any], seed: int
    ) -> TrialConfig:
        """The trial at a grid point (whose section dicts the points share), draw and seed."""
        parsed = {name: self._section(name, point[name], draw_index, draw) for name in SECTIONS}
        pruning = parsed["pruning"]
        if pruning.method == "schedule" and not pruning.layers:
            parsed["pruning"] = self._with_default_layers(
                pruning, parsed["model"], parsed["dataset"]
            )
        return TrialConfig(
            **parsed,
            seed=seed,
            generalization=self._spec.generalization,
            per_example_loss=self._spec.per_example_loss,
        )

    def _section(self, name: str, value: dict[str, Any], draw_index: int, draw: dict) -> Any:
        key = (name, id(value), draw_index)  # the points (and so `value`) outlive the builder
        if key not in self._sections:
            problems = Problems()
            section = parse_mapping(SECTION_TYPES[name], _fill(value, draw), name, problems)
            problems.raise_if_any(ValueError)
            self._sections[key] = section
        return self._sections[key]

    def _with_default_layers(self, pruning: Any, model: Any, dataset: Any) -> Any:
        key = (id(pruning), model.name, model.width, dataset.name)
        if key not in self._layers:
            layers = schedule_layers((), model.name, model.width, dataset.name)
            self._layers[key] = dataclasses.replace(pruning, layers=layers)
        return self._layers[key]


def _fill(data: Any, draw: dict[str, Any]) -> Any:
    if isinstance(data, _Draw):
        return plain(draw[data.where])
    if isinstance(data, dict):
        return {k: _fill(v, draw) for k, v in data.items()}
    return data


def _as_distribution(path: str, value: Grid | Dist) -> tuple[str, DistKind, tuple[Any, ...]]:
    if isinstance(value, Grid):
        return path, "choice", tuple(plain(v) for v in value.values)
    return path, value.kind, tuple(plain(v) for v in value.args)
