"""The study spec: one YAML document -> a frozen, typed, fully validated `StudySpec`.

Layout (every key optional except where noted; unknown keys are errors)::

    name: quickstart              # the study directory <storage>/<name>; default: file stem
    dataset: {...}                # the sections dataset, model, train, pruning (with its
    model: {...}                  #   perturbation and imp sub-sections) and flatness are the
    train: {...}                  #   trainables.config section classes themselves: same fields,
    pruning: {...}                #   defaults, help and rules; every leaf may hold a sweep and a
    flatness: {...}               #   section may be a list of sections (search_spaces.sweeps)
    seeds: 3                      # a count (0..n-1) or a list of distinct ints
    baselines: true               # add matched unpruned baselines (one per seed and config)
    generalization: best_after_last_event
    per_example_loss: false
    search: {algorithm: grid, num_samples: 1, metric: test_acc, mode: max, seed: 0}
    resources: {cpu: 1, gpu: 0}   # per trial; gpu may be fractional (below 1)
    max_concurrent_trials: null   # null: as many as the resources allow
    checkpoint_frequency: 1       # epochs between trial checkpoints
    report_batch_s: 0.5           # seconds of epochs gathered into one report to Tune
    retries: 2                    # retries of a failed trial, from its last checkpoint
    report_every: 300             # seconds between live refreshes of the tables and report
    storage: ./studies            # a local path or a URI (s3://, gs://)
    fits: [...]                   # named correlation fits (search_spaces.fits); analysis only

A section of a spec is an instance of its ``trainables.config`` class whose leaves may hold a
:class:`~search_spaces.sweeps.Grid` or :class:`~search_spaces.sweeps.Dist` instead of a value.

Validation, all problems at once: types (:func:`trainables.coerce.coerce`) and each field's own
rule (on the field, in ``trainables.config`` and below) while parsing; rules relating fields and
the sweeps each search algorithm accepts in ``search_spaces.cross``; model-dependent checks (model
fits dataset, layer names, default schedule vs epochs) in ``search_spaces.model_check``.

Identity: ``spec.hash`` hashes the canonical science of the study: the five sections, seeds,
baselines, generalization, per_example_loss and search, with default-valued fields dropped (so
a field added later with a default keeps every old hash). It excludes ``name`` and ``storage``
(where the study lives, not what it computes) and the execution settings ``resources``,
``max_concurrent_trials``, ``checkpoint_frequency``, ``report_batch_s``, ``retries`` and
``report_every`` (they change how fast the numbers come or how often they are shown, not the
numbers; Tune freezes its searcher settings when a study starts anyway),
and ``fits`` (how the numbers are analysed; a study's fits may grow after it started).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from search_spaces import cross, model_check
from search_spaces.fits import FitSpec, fits_plain, parse_fits
from search_spaces.spec_parse import parse_fields, parse_section, parse_seeds
from search_spaces.sweeps import Dist, Grid, plain
from search_spaces.yaml_io import dump_yaml, load_yaml
from trainables.coerce import coerce
from trainables.config import (
    DatasetConfig,
    FlatnessConfig,
    GeneralizationMeasure,
    ModelConfig,
    PruningConfig,
    TrainConfig,
    TrialConfig,
)
from trainables.errors import UserError
from trainables.fields import INVALID, param, problems_of, rule_of, section, type_hints
from trainables.identity import content_hash
from trainables.problems import Problems, kind_of, show
from trainables.records import FIELDS as RECORD_FIELDS
from trainables.value_rules import above, at_least, one_of

Algorithm = Literal["grid", "random", "optuna"]
Mode = Literal["min", "max"]

# Record keys a search may optimise: the numbers the trainable reports every epoch.
METRICS: tuple[str, ...] = tuple(
    name
    for name, f in RECORD_FIELDS.items()
    if f.type in ("float64", "int64") and name not in ("epoch", "imp_round", "num_events")
)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DEFAULT_STORAGE = "./studies"  # where a study goes when neither the spec nor --storage says


def _name_rule(v: str) -> str | None:
    if NAME_RE.fullmatch(v):
        return None
    return (
        "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        f"got {show(v)}"
    )


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _whole_or_fraction(v: float) -> str | None:
    if v < 0:
        return f"must be >= 0, got {v!r}"
    if v > 1 and v != int(v):
        return f"must be a fraction below 1 or a whole number, got {v!r}"
    return None


@dataclass(frozen=True)
class SearchSpec:
    algorithm: Algorithm = param("grid", "grid: lists only; random: pre-sampled; optuna: TPE")
    num_samples: int = param(1, "random / optuna: configurations drawn", at_least(1))
    metric: str = param("test_acc", "the record key Optuna optimises", one_of("metric", METRICS))
    mode: Mode = param("max", "min or max")
    seed: int = param(0, "seeds random pre-sampling and Optuna's TPE sampler", at_least(0))


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = param(1.0, "CPUs per trial (also the trial's torch threads)", above(0))
    gpu: float = param(
        0.0, "GPUs per trial: a fraction below 1 or a whole number", _whole_or_fraction
    )


def _mirror(name: str) -> Any:
    """A top-level field that is a TrialConfig field (same default, help and rule)."""
    f = TrialConfig.__dataclass_fields__[name]
    return param(f.default, f.metadata["help"], f.metadata["rule"])


@dataclass(frozen=True)
class StudySpec:
    name: str = param("", "the study directory <storage>/<name>", _name_rule)
    dataset: DatasetConfig | Grid = section(DatasetConfig, "the data")
    model: ModelConfig | Grid = section(ModelConfig, "the network")
    train: TrainConfig | Grid = section(TrainConfig, "the optimiser and its schedule")
    pruning: PruningConfig | Grid = section(PruningConfig, "what is pruned, when and how")
    flatness: FlatnessConfig | Grid = section(FlatnessConfig, "flatness measurements")
    seeds: tuple[int, ...] = param((0,), "a seed count (0..n-1) or a list of distinct seeds")
    baselines: bool = param(True, "add matched unpruned baselines, one per seed and config")
    generalization: GeneralizationMeasure = _mirror("generalization")
    per_example_loss: bool = _mirror("per_example_loss")
    search: SearchSpec = section(SearchSpec, "how configurations are chosen")
    resources: ResourcesSpec = section(ResourcesSpec, "per-trial resources")
    max_concurrent_trials: int | None = param(
        None, "trials at once; null = as many as the resources allow", at_least(1)
    )
    checkpoint_frequency: int = param(1, "epochs between trial checkpoints", at_least(1))
    report_batch_s: float = param(
        0.5,
        "seconds of epochs a trial gathers into one report to Tune (0 = a report per epoch); "
        "a report carries the checkpoint when one is due",
        at_least(0),
    )
    retries: int = param(2, "retries of a failed trial, from its last checkpoint", at_least(0))
    report_every: int = param(
        300,
        "seconds between refreshes of the Parquet tables and report.html while the study runs "
        "(0 = only at the end)",
        at_least(0),
    )
    storage: str = param(
        DEFAULT_STORAGE, "where studies live: a path or a URI (s3://, gs://)", _non_empty
    )
    fits: tuple[FitSpec, ...] = param((), "named correlation fits, added to the default ones")

    @property
    def hash(self) -> str:
        """16 hex chars of the SHA-256 of :meth:`canonical_dict` (see the module docstring)."""
        return content_hash(self.canonical_dict())[:16]

    def canonical_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            if f.name in NOT_HASHED:
                continue
            value = getattr(self, f.name)
            if f.name in cross.SECTIONS or dataclasses.is_dataclass(value):
                sub = _drop_defaults(value)
                if sub:
                    out[f.name] = sub
            elif value != f.default:
                out[f.name] = plain(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included, as plain YAML data (loads back to an equal spec)."""
        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {**out, "fits": fits_plain(self.fits)}

    def to_yaml(self) -> str:
        """The resolved spec as YAML; its first line is ``# spec-hash: <hash>``."""
        return f"# spec-hash: {self.hash}\n" + dump_yaml(self.to_dict())


NOT_HASHED = frozenset(
    {"name", "storage", "resources", "max_concurrent_trials", "checkpoint_frequency", "retries"}
    | {"report_batch_s", "report_every", "fits"}
)


def _drop_defaults(section_value: Any) -> Any:
    """Plain data of a section without default-valued fields (a grid of sections: per item)."""
    if isinstance(section_value, Grid):
        return [_drop_defaults(item) for item in section_value.values]
    out = {}
    for f in dataclasses.fields(section_value):
        value = getattr(section_value, f.name)
        if cross.is_section(value) or cross.is_section_grid(value):
            sub = _drop_defaults(value)
            if sub:
                out[f.name] = sub
        elif value != f.default:
            out[f.name] = plain(value)
    return out


# --- loading --------------------------------------------------------------------------------------


def load_spec(
    source: str,
    *,
    name: str | None = None,
    storage: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    note: Callable[[str], None] | None = None,
) -> StudySpec:
    """Load a spec from a YAML file path or a preset name; apply `overrides` (``KEY=VALUE``,
    :mod:`search_spaces.overrides`), then `name` and `storage`; validate everything.

    Raises UserError listing every problem, one ``field.path: rule, got value`` per line. When a
    file and a preset share the name, the file is used and `note` is told so.
    """
    from search_spaces.presets import PRESETS, preset_text

    path = Path(source).expanduser()
    if path.is_file():
        if source in PRESETS and note is not None:
            note(f"using the file {path}, not the preset {source} (a file of that name is here)")
        text, label, stem = _read_spec_file(path), str(path), path.stem
    elif source in PRESETS:
        text, label, stem = preset_text(source), f"preset {source}", source
    elif path.exists():
        raise UserError(f"{source}: is not a file (a spec is a YAML file or a preset name)")
    elif path.suffix in (".yaml", ".yml") or "/" in source:
        raise UserError(f"{source}: no such spec file")
    else:
        raise UserError(
            f"unknown preset {source!r}; choose one of: {', '.join(PRESETS)} (or give a YAML file path)"
        )
    return spec_from_yaml(
        text, label, default_name=stem, name=name, storage=storage, overrides=overrides
    )


def _read_spec_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
            "save the spec as UTF-8"
        ) from None


def spec_from_yaml(
    text: str,
    source: str = "<spec>",
    *,
    default_name: str | None = None,
    name: str | None = None,
    storage: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> StudySpec:
    """Parse and validate YAML text (``source`` names it in syntax errors)."""
    from search_spaces.overrides import apply_overrides, key_tree, parse_overrides

    data = load_yaml(text, source)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else kind_of(data)
        raise UserError(f"{source}: must be a mapping of spec fields, got {got}")
    if overrides:
        valid = key_tree(StudySpec)
        data = apply_overrides(data, parse_overrides(list(overrides), valid), valid)
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
    kwargs = {key: _parse_top(key, data[key], problems) for key in known if key in data}
    spec = StudySpec(**{"name": INVALID, **kwargs})
    cross.check_cross(spec, problems)
    cross.check_search(spec, problems)
    cross.check_scale(spec, problems)
    model_check.check_models(spec, problems)
    problems.raise_if_any()
    return spec


def _parse_top(key: str, value: Any, problems: Problems) -> Any:
    tp = type_hints(StudySpec)[key]
    if key in cross.SECTIONS:
        return parse_section(cross.SECTION_TYPES[key], value, key, problems)
    if key == "seeds":
        return parse_seeds(value, problems)
    if key == "fits":
        return parse_fits(value, problems)
    if key in ("search", "resources"):
        return parse_fields(tp, value, key, problems, sweeps=False)
    if key == "max_concurrent_trials" and value is None:
        return None
    parsed = coerce(int if key == "max_concurrent_trials" else tp, value, key, problems)
    if parsed is not INVALID:
        for bad, message in problems_of(rule_of(StudySpec, key), [(key, parsed)]):
            problems.add(bad, message)
    return parsed


__all__ = [
    "METRICS",
    "NAME_RE",
    "Dist",
    "FitSpec",
    "Grid",
    "ResourcesSpec",
    "SearchSpec",
    "StudySpec",
    "load_spec",
    "spec_from_dict",
    "spec_from_yaml",
]
