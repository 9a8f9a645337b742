"""``--smoke``: every arm of a study at toy scale, to see it run end to end on a CPU in minutes.

:func:`smoke_spec` maps a validated spec to another, deterministically (given which datasets are
on disk), and validates the result as any spec is validated. Its numbers say nothing about the
paper a preset reproduces: they only show that every arm runs, records, exports and reports.

Kept: every grid and distribution (targets, periods, scores, models, controls, perturbation
modes, variants and steps, label-noise levels, ...), every grid of sections, the fits, the
generalization measure, ``per_example_loss``, the storage.

Shrunk:

- ``name``: ``<name>-smoke``, so that the real study is never touched.
- Epochs: the longest training (``train.epochs``, per IMP round) becomes :data:`SMOKE_EPOCHS`,
  and every epoch number of the spec scales by the same factor ``f``: ``train.epochs`` to
  ``ceil(e * f)``; the epochs at which something happens (``train.milestones``, the layers'
  ``start_epoch`` / ``end_epoch``, ``flatness.epochs``, ``pruning.imp.rewind_epoch``) to
  ``floor(e * f)``, so each still falls inside the shorter training and every event, LR drop,
  measurement and rewind still happens. Milestones and flatness epochs that land on one epoch
  are moved apart (one that no longer fits is dropped). Periods are arms: kept, so a long
  period may leave one event.
- An empty ``pruning.layers`` (the model's paper schedule) is listed, scaled; a spec that crosses
  several models with it gets the layers their schedules share.
- ``pruning.imp.rounds``: at most :data:`SMOKE_IMP_ROUNDS`. Perturbation windows keep their
  length in training steps (the steps are arms): one longer than the short run closes at its end.
- ``model.width``: at most :data:`SMOKE_WIDTH`. ``dataset.max_examples``: at most
  :data:`SMOKE_EXAMPLES` training and as many test examples.
- A dataset whose files are not on disk: ``dataset.synthetic`` (its shape and classes, no
  download), said in one note.
- Flatness: a :data:`SMOKE_FLATNESS_SUBSET`-example subset, the top 2 eigenvalues, 3 power steps.
- The first seed only; ``search.num_samples`` at most 2; resources 1 CPU, no GPU, as many trials
  at once as fit; no retries (a failure shows at once).

A shrunk grid keeps its values distinct (each moved one above the previous, in the original
order), so arms stay arms.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from search_spaces.cross import combos, is_section
from search_spaces.spec import ResourcesSpec, StudySpec, spec_from_dict
from search_spaces.sweeps import Dist, Grid, candidates
from trainables import datasets
from trainables.config import DatasetConfig
from trainables.errors import UserError
from trainables.models import schedule_layers

SMOKE_EPOCHS = 4
SMOKE_IMP_ROUNDS = 2
SMOKE_WIDTH = 8
SMOKE_EXAMPLES = 128
SMOKE_FLATNESS_SUBSET = 64
SMOKE_SEARCH_SAMPLES = 2


def smoke_spec(spec: StudySpec, note: Callable[[str], None] | None = None) -> StudySpec:
    """The smoke version of ``spec`` (module docstring), validated; ``note`` hears the one line
    saying that synthetic data stands in for datasets that are not on disk."""
    epochs = [v for ((_, v),) in combos(spec, "train.epochs")]
    scale = _Scale(Fraction(min(SMOKE_EPOCHS, max(epochs)), max(epochs)))
    absent = sorted(set().union(*(_absent(d) for d in _items(spec.dataset))))
    smoke = dataclasses.replace(
        spec,
        name=f"{spec.name}-smoke",
        dataset=_sections(spec.dataset, _dataset),
        model=_sections(spec.model, _model),
        train=_sections(spec.train, scale.train),
        pruning=_sections(spec.pruning, lambda p: scale.pruning(p, lambda: _defaults(spec))),
        flatness=_sections(spec.flatness, lambda f: scale.flatness(f, scale.epochs(min(epochs)))),
        seeds=spec.seeds[:1],
        search=dataclasses.replace(
            spec.search, num_samples=min(spec.search.num_samples, SMOKE_SEARCH_SAMPLES)
        ),
        resources=ResourcesSpec(cpu=1.0, gpu=0.0),
        max_concurrent_trials=None,
        retries=0,
    )
    if absent and note is not None:
        where = "; ".join(f"{title} is not in {folder}" for title, folder in absent)
        note(
            f"--smoke: {where}: training on synthetic data of its shape and classes instead "
            "(the numbers say nothing about the paper)"
        )
    return spec_from_dict(smoke.to_dict())


def check_data(spec: StudySpec) -> None:
    """Refuse (UserError, one line) a spec with a dataset its trials could not load
    (:func:`trainables.datasets.check_available`), before anything starts or is written."""
    paths = ("dataset.name", "dataset.data_dir", "dataset.download", "dataset.synthetic")
    seen = set()
    for (_, name), (_, data_dir), (_, download), (_, synthetic) in combos(spec, *paths):
        cfg = DatasetConfig(name=name, data_dir=data_dir, download=download, synthetic=synthetic)
        if cfg in seen:
            continue
        seen.add(cfg)
        problem = datasets.check_available(cfg) or _unwritable_cache(cfg)
        if problem:
            raise UserError(problem)


def _unwritable_cache(cfg: DatasetConfig) -> str | None:
    """MNIST-1D is generated by the first trial and cached in ``<data dir>/mnist1d``: that
    directory must be writable (or already hold a cached dataset), else every trial would fail."""
    if cfg.name != "mnist1d" or cfg.synthetic:
        return None
    cache = datasets.data_dir(cfg.data_dir) / "mnist1d"
    if cache.is_dir() and any(cache.glob("mnist1d_n*.npz")):
        return None
    existing = next(p for p in (cache, *cache.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    return (
        f"dataset.data_dir: MNIST-1D is generated once and cached in {cache}, but {existing} is "
        "not a writable directory; set dataset.data_dir (or $PRUNETUNE_DATA) to a writable one"
    )


# --- shrinking values ------------------------------------------------------------------------------


def _shrink(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to a single value, to each value of a grid or choice (kept distinct: a value
    that meets or passes the previous one, in the original order, is moved one above it), or to
    an integer distribution's bounds (kept apart)."""
    if isinstance(value, Grid):
        return Grid(_distinct(value.values, fn))
    if isinstance(value, Dist) and value.kind == "choice":
        return Dist("choice", _distinct(value.args, fn))
    if isinstance(value, Dist):
        low, high = fn(value.args[0]), fn(value.args[1])
        return Dist(value.kind, (low, max(high, low + 1)))
    return fn(value)


def _distinct(values: tuple[Any, ...], fn: Callable[[Any], Any]) -> tuple[Any, ...]:
    """``fn`` of each value; integers kept distinct and in their order (list values as mapped)."""
    if not all(isinstance(v, int) for v in values):
        return tuple(fn(v) for v in values)
    out: list[int] = [0] * len(values)
    last = None
    for i in sorted(range(len(values)), key=lambda i: values[i]):
        v = fn(values[i])
        v = v if last is None or v > last else last + 1
        out[i], last = v, v
    return tuple(out)


def _at_most(bound: int) -> Callable[[int], int]:
    """0 (the default: unbounded or the architecture's) and values above ``bound`` -> bound."""
    return lambda v: min(v, bound) if v else bound


def _sections(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to a section, or to each item of a grid of sections."""
    if isinstance(value, Grid):
        return Grid(tuple(fn(item) for item in value.values))
    assert is_section(value), value
    return fn(value)


# --- the sections ----------------------------------------------------------------------------------


def _items(value: Any) -> tuple[Any, ...]:
    """A section's items: the section itself, or each of a grid of sections."""
    return value.values if isinstance(value, Grid) else (value,)


def _absent(d: DatasetConfig) -> set[tuple[str, str]]:
    """(title, folder) of each dataset a dataset section can name whose files are not on disk
    (none when the section is synthetic already)."""
    if True in {v for _, v in candidates(d.synthetic, "")}:
        return set()
    out = set()
    for _, name in candidates(d.name, ""):
        for _, configured in candidates(d.data_dir, ""):
            info, root = datasets.get(name), datasets.data_dir(configured)
            if datasets.missing_files(info, root):
                out.add((info.title, str(root / info.folder)))
    return out


def _dataset(d: DatasetConfig) -> DatasetConfig:
    d = dataclasses.replace(d, max_examples=_shrink(d.max_examples, _at_most(SMOKE_EXAMPLES)))
    return dataclasses.replace(d, synthetic=True, download=False) if _absent(d) else d


def _model(m: Any) -> Any:
    return dataclasses.replace(m, width=_shrink(m.width, _at_most(SMOKE_WIDTH)))


def _defaults(spec: StudySpec) -> tuple:
    """The paper schedule layers every model of the spec shares (by name; the first model's
    entries), for a schedule whose layer list is empty."""
    pairs = combos(spec, "model.name", "dataset.name")
    schedules = [schedule_layers((), model, 0, dataset) for (_, model), (_, dataset) in pairs]
    shared = set.intersection(*({layer.name for layer in s} for s in schedules))
    layers = tuple(layer for layer in schedules[0] if layer.name in shared)
    if not layers:
        raise UserError(
            "pruning.layers: --smoke scales the models' paper schedules, and these models share "
            "no layer of theirs; list the layers"
        )
    return layers


@dataclasses.dataclass(frozen=True)
class _Scale:
    """Epoch numbers times ``factor``: an end of training rounds up, an epoch in it down."""

    factor: Fraction

    def epochs(self, e: int) -> int:
        return max(1, math.ceil(e * self.factor))

    def at(self, e: int) -> int:
        return math.floor(e * self.factor)

    def spread(self, epochs: tuple[int, ...], low: int, end: int) -> tuple[int, ...]:
        """Scaled increasing epochs, each >= ``low``, moved apart, kept below ``end``."""
        out: list[int] = []
        for e in epochs:
            v = max(self.at(e), low, out[-1] + 1 if out else low)
            if v < end:
                out.append(v)
        return tuple(out)

    def train(self, t: Any) -> Any:
        end = self.epochs(min(v for _, v in candidates(t.epochs, "")))
        return dataclasses.replace(
            t,
            epochs=_shrink(t.epochs, self.epochs),
            milestones=_shrink(t.milestones, lambda m: self.spread(m, 1, end)),
        )

    def layers(self, layers: tuple) -> tuple:
        return tuple(
            dataclasses.replace(
                x, start_epoch=self.at(x.start_epoch), end_epoch=self.at(x.end_epoch)
            )
            for x in layers
        )

    def pruning(self, p: Any, defaults: Callable[[], tuple]) -> Any:
        """Layers scaled (an empty list of a schedule: ``defaults()``, scaled); IMP shrunk."""
        layers = defaults() if p.method == "schedule" and p.layers == () else p.layers
        imp = _sections(
            p.imp,
            lambda i: dataclasses.replace(
                i,
                rounds=_shrink(i.rounds, lambda r: min(r, SMOKE_IMP_ROUNDS)),
                rewind_epoch=_shrink(i.rewind_epoch, self.at),
            ),
        )
        return dataclasses.replace(p, layers=_shrink(layers, self.layers), imp=imp)

    def flatness(self, f: Any, end: int) -> Any:
        if f.epochs == ():
            return f
        return dataclasses.replace(
            f,
            epochs=_shrink(f.epochs, lambda es: self.spread(es, 0, end)),
            subset_size=_shrink(f.subset_size, _at_most(SMOKE_FLATNESS_SUBSET)),
            top_k=_shrink(f.top_k, _at_most(2)),
            power_iters=_shrink(f.power_iters, _at_most(3)),
        )
