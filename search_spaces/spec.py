"""The study spec: one YAML document -> a frozen, typed, fully validated `StudySpec`.

Layout (every key optional except where noted; unknown keys are errors)::

    name: quickstart              # the study directory <storage>/<name>; default: file stem
    dataset: {...}                # the sections dataset, model, train, pruning (with its
    model: {...}                  #   perturbation and imp sub-sections) and flatness mirror
    train: {...}                  #   trainables.config.TrialConfig field for field, with its
    pruning: {...}                #   defaults; every leaf may hold a sweep and a section may be a
    flatness: {...}               #   list of sections (the convention: search_spaces.sweeps)
    seeds: 3                      # a count (0..n-1) or a list of distinct ints
    baselines: true               # add matched unpruned baselines (one per seed and config)
    generalization: best_after_last_event
    per_example_loss: false
    search: {algorithm: grid, num_samples: 1, metric: test_acc, mode: max, seed: 0}
    resources: {cpu: 1, gpu: 0}   # per trial; gpu may be fractional (below 1)
    max_concurrent_trials: null   # null: as many as the resources allow
    checkpoint_frequency: 1       # epochs between trial checkpoints
    retries: 2                    # retries of a failed trial, from its last checkpoint
    storage: ./studies            # a local path or a URI (s3://, gs://)

Validation, all problems at once: types here and in ``sweeps``, field ranges and names in
``rules``, rules across fields and search algorithms in ``cross``, and model-dependent checks
(model fits dataset, layer names, default schedule vs epochs) in ``model_check``.

Identity: ``spec.hash`` hashes the canonical science of the study: the five sections, seeds,
baselines, generalization, per_example_loss and search, with default-valued fields dropped (so
a field added later with a default keeps every old hash). It excludes ``name`` and ``storage``
(where the study lives, not what it computes) and the execution settings ``resources``,
``max_concurrent_trials``, ``checkpoint_frequency`` and ``retries`` (they change how fast the
numbers come, not the numbers; Tune freezes its searcher settings when a study starts anyway).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from search_spaces import cross, model_check, rules
from search_spaces.cross import SECTIONS, is_section
from search_spaces.sweeps import INVALID, Dist, Grid, Problems, coerce, kind_of, parse_sweep, plain
from search_spaces.yaml_io import dump_yaml, load_yaml
from trainables.config import (
    DatasetConfig,
    FlatnessConfig,
    GeneralizationMeasure,
    ImpConfig,
    ModelConfig,
    PerturbationConfig,
    PruningConfig,
    TrainConfig,
    content_hash,
)
from trainables.errors import UserError

Algorithm = Literal["grid", "random", "optuna"]
Mode = Literal["min", "max"]


def _sweepable(config_cls: type) -> type:
    """A frozen dataclass mirroring `config_cls` field for field, each leaf `T | Grid | Dist`.

    Defaults are the TrialConfig defaults; nested config sections become nested spec sections
    (which may also be a Grid of such sections).
    Generated so that the spec can never drift from TrialConfig.
    """
    hints = typing.get_type_hints(config_cls)
    fields = []
    for f in dataclasses.fields(config_cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = _sweepable(tp)
            fields.append((f.name, sub | Grid, field(default_factory=sub)))
        else:
            fields.append((f.name, tp | Grid | Dist, field(default=f.default)))
    name = config_cls.__name__.replace("Config", "Spec")
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__module__ = __name__  # the module-level names below make instances picklable
    cls.__doc__ = f"Sweepable mirror of trainables.config.{config_cls.__name__}."
    cls.config_type = config_cls
    return cls


DatasetSpec = _sweepable(DatasetConfig)
ModelSpec = _sweepable(ModelConfig)
TrainSpec = _sweepable(TrainConfig)
PruningSpec = _sweepable(PruningConfig)
FlatnessSpec = _sweepable(FlatnessConfig)
PerturbationSpec = PruningSpec.__dataclass_fields__["perturbation"].default_factory
ImpSpec = PruningSpec.__dataclass_fields__["imp"].default_factory
assert PerturbationSpec.config_type is PerturbationConfig and ImpSpec.config_type is ImpConfig


@dataclass(frozen=True)
class SearchSpec:
    algorithm: Algorithm = "grid"  # grid: lists only; random: pre-sampled; optuna: TPE via Tune
    num_samples: int = 1  # random / optuna: configurations drawn (each run with every seed)
    metric: str = "test_acc"  # a per-epoch record key; Optuna sees its last reported value
    mode: Mode = "max"
    seed: int = 0  # seeds the random pre-sampling and Optuna's TPE sampler


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = 1.0  # CPUs per trial (> 0; also the trial's torch threads)
    gpu: float = 0.0  # GPUs per trial: a fraction below 1 or a whole number


@dataclass(frozen=True)
class StudySpec:
    name: str
    dataset: DatasetSpec | Grid = field(default_factory=DatasetSpec)
    model: ModelSpec | Grid = field(default_factory=ModelSpec)
    train: TrainSpec | Grid = field(default_factory=TrainSpec)
    pruning: PruningSpec | Grid = field(default_factory=PruningSpec)
    flatness: FlatnessSpec | Grid = field(default_factory=FlatnessSpec)
    seeds: tuple[int, ...] = (0,)
    baselines: bool = True
    generalization: GeneralizationMeasure = "best_after_last_event"
    per_example_loss: bool = False
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = None
    checkpoint_frequency: int = 1
    retries: int = 2
    storage: str = "./studies"

    @property
    def hash(self) -> str:
        """16 hex chars of the SHA-256 of :meth:`canonical_dict` (see the module docstring)."""
        return content_hash(self.canonical_dict())[:16]

    def canonical_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            if f.name in _NOT_HASHED:
                continue
            value = getattr(self, f.name)
            if f.name in SECTIONS or dataclasses.is_dataclass(value):
                sub = _drop_defaults(value)
                if sub:
                    out[f.name] = sub
            elif value != f.default:
                out[f.name] = plain(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included, as plain YAML data (loads back to an equal spec)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        """The resolved spec as YAML; its first line is ``# spec-hash: <hash>``."""
        return f"# spec-hash: {self.hash}\n" + dump_yaml(self.to_dict())


_NOT_HASHED = frozenset(
    {"name", "storage", "resources", "max_concurrent_trials", "checkpoint_frequency", "retries"}
)


def _drop_defaults(section: Any) -> Any:
    """Plain data of a section without default-valued fields (a grid of sections: per item)."""
    if isinstance(section, Grid):
        return [_drop_defaults(item) for item in section.values]
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if is_section(value) or (isinstance(value, Grid) and is_section(value.values[0])):
            sub = _drop_defaults(value)
            if sub:
                out[f.name] = sub
        elif value != f.default:
            out[f.name] = plain(value)
    return out


# --- loading --------------------------------------------------------------------------------------


def load_spec(source: str, *, name: str | None = None, storage: str | None = None) -> StudySpec:
    """Load a spec from a YAML file path or a preset name; apply overrides; validate everything.

    Raises UserError listing every problem, one ``field.path: rule, got value`` per line.
    """
    from search_spaces.presets import PRESETS, preset_text

    path = Path(source)
    if path.is_file():
        text, label, stem = path.read_text(), str(path), path.stem
    elif source in PRESETS:
        text, label, stem = preset_text(source), f"preset {source}", source
    elif path.suffix in (".yaml", ".yml") or "/" in source:
        raise UserError(f"{source}: no such spec file")
    else:
        raise UserError(
            f"unknown preset {source!r}; choose one of: {', '.join(PRESETS)} (or give a YAML file path)"
        )
    return spec_from_yaml(text, label, default_name=stem, name=name, storage=storage)


def spec_from_yaml(
    text: str,
    source: str = "<spec>",
    *,
    default_name: str | None = None,
    name: str | None = None,
    storage: str | None = None,
) -> StudySpec:
    """Parse and validate YAML text (``source`` names it in syntax errors)."""
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else kind_of(data)
        raise UserError(f"{source}: must be a mapping of spec fields, got {got}")
    if default_name is not None:
        data.setdefault("name", default_name)
    if name is not None:
        data["name"] = name
    if storage is not None:
        data["storage"] = storage
    return spec_from_dict(data)


def spec_from_dict(data: dict[str, Any]) -> StudySpec:
    """Validate plain data (as YAML loads it) into a StudySpec; every problem in one UserError."""
    problems = Problems()
    known = [f.name for f in dataclasses.fields(StudySpec)]
    for key in data:
        if key not in known:
            problems.add(str(key), f"unknown key; valid keys: {', '.join(sorted(known))}")
    if "name" not in data:
        problems.add("name", "missing; every study needs a name")
    kwargs: dict[str, Any] = {}
    for key in known:
        if key in data:
            kwargs[key] = _parse_top(key, data[key], problems)
    spec = StudySpec(**{"name": INVALID, **kwargs})
    cross.check_cross(spec, problems)
    cross.check_search(spec, problems)
    model_check.check_models(spec, problems)
    problems.raise_if_any()
    return spec


def _parse_top(key: str, value: Any, problems: Problems) -> Any:
    if key in SECTIONS:
        return _parse_section(_SECTION_TYPES[key], value, key, key, problems)
    if key == "seeds":
        return _parse_seeds(value, problems)
    if key in ("search", "resources"):
        return _parse_plain(SearchSpec if key == "search" else ResourcesSpec, value, key, problems)
    if key == "max_concurrent_trials" and value is None:
        return None
    tp = typing.get_type_hints(StudySpec)[key]
    parsed = coerce(int if key == "max_concurrent_trials" else tp, value, key, problems)
    if parsed is not INVALID:
        message = rules.TOP_RULES.get(key, lambda v: None)(parsed)
        if message:
            problems.add(key, message)
    return parsed


_SECTION_TYPES = {
    "dataset": DatasetSpec,
    "model": ModelSpec,
    "train": TrainSpec,
    "pruning": PruningSpec,
    "flatness": FlatnessSpec,
}


def _mapping(value: Any, path: str, valid: list[str], problems: Problems) -> dict[str, Any] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, got {kind_of(value)}")
        return None
    for key in value:
        if key not in valid:
            problems.add(f"{path}.{key}", f"unknown key; valid keys: {', '.join(sorted(valid))}")
    return value


def _parse_section(cls: type, value: Any, where: str, path: str, problems: Problems) -> Any:
    """A section: a mapping (its leaves may be sweeps) or a list of mappings (a grid of sections).

    ``where`` names the value in errors (``pruning.perturbation[1]``); ``path`` is the field path
    without grid indices (``pruning.perturbation``), which keys the field rules.
    """
    if isinstance(value, list):
        if not value:
            problems.add(where, "an empty list is not a grid; give at least one mapping")
            return cls()
        items = [
            _parse_section(cls, v, f"{where}[{i}]", path, problems) for i, v in enumerate(value)
        ]
        for i, item in enumerate(items):
            if item in items[:i]:
                problems.add(f"{where}[{i}]", "grid items must be distinct, got a repeated mapping")
        return items[0] if len(items) == 1 else Grid(tuple(items))
    hints = typing.get_type_hints(cls.config_type)
    fields = dataclasses.fields(cls)
    data = _mapping(value, where, [f.name for f in fields], problems)
    if data is None:
        return cls()
    kwargs = {}
    for f in fields:
        if f.name not in data:
            continue
        tp = hints[f.name]
        at, field_path = f"{where}.{f.name}", f"{path}.{f.name}"
        if dataclasses.is_dataclass(tp):
            sub = f.default_factory
            kwargs[f.name] = _parse_section(sub, data[f.name], at, field_path, problems)
        else:
            kwargs[f.name] = parse_sweep(tp, data[f.name], at, problems)
            for bad, message in rules.problems_of(field_path, kwargs[f.name], at):
                problems.add(bad, message)
    return cls(**kwargs)


def _parse_plain(cls: type, value: Any, path: str, problems: Problems) -> Any:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    data = _mapping(value, path, [f.name for f in fields], problems)
    if data is None:
        return cls()
    kwargs = {
        f.name: coerce(hints[f.name], data[f.name], f"{path}.{f.name}", problems)
        for f in fields
        if f.name in data
    }
    for key, rule in rules.PLAIN_RULES.items():
        section, _, name = key.partition(".")
        value = kwargs.get(name, INVALID)
        if section == path and value is not INVALID:
            message = rule(value)
            if message:
                problems.add(key, message)
    return cls(**kwargs)


def _parse_seeds(value: Any, problems: Problems) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            problems.add("seeds", f"a seed count must be >= 1, got {value}")
            return INVALID
        return tuple(range(value))
    if not isinstance(value, list) or not value:
        problems.add(
            "seeds", f"must be a count or a non-empty list of integers, got {kind_of(value)}"
        )
        return INVALID
    seeds = [coerce(int, v, f"seeds[{i}]", problems) for i, v in enumerate(value)]
    if any(s is INVALID for s in seeds):
        return INVALID
    for i, s in enumerate(seeds):
        if s < 0:
            problems.add(f"seeds[{i}]", f"must be >= 0, got {s}")
        elif s in seeds[:i]:
            problems.add(f"seeds[{i}]", f"seeds must be distinct, got {s} twice")
    return tuple(seeds)
