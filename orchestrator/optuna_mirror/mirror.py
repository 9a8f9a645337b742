"""The Optuna mirror: ``<study>/optuna.db``, the Optuna search as an Optuna study that
optuna-dashboard and ``optuna.visualization`` open.

Tune's OptunaSearch keeps its Optuna study in memory, pickled into Tune's experiment snapshot.
The mirror is a copy derived from Tune's state alone (each trial's config, status, last result
and times, as live Trial objects or the snapshot hold them; never the pickled searcher), so it is
a function of the ``tune/optuna`` experiment: rebuilding it gives the same trials, and writing it
twice changes nothing (:mod:`orchestrator.optuna_mirror.db` writes it).

**One Optuna trial per suggestion.** The Repeater runs each suggestion once per seed
(``config["seeds"][__trial_index__]``); the seeds of one suggestion are consecutive Tune trials,
index 0 first, in the order Tune's SearchGenerator created them (the counter that starts each
trial's ``experiment_tag``; neither the snapshot nor a restored trial list keeps that order).
OptunaSearch itself knows only the first of them, and is told, once every seed ended, the mean
over the seeds of each seed's last ``search.metric`` value (``numpy.nanmean``: a seed that
errored, or ended without the metric, does not count). The mirror holds exactly that:

- a suggestion appears once all its seeds have ended (Tune status TERMINATED or ERROR);
- state COMPLETE with that mean as value, or FAIL when no seed gave a value (Optuna turns a NaN
  value into FAIL). No trial is PRUNED: OptunaSearch gives Optuna its NopPruner, and the
  Repeater always reports a number;
- params: the searched fields by spec path (``pruning.target``) with the distributions
  OptunaSearch uses (:mod:`search_spaces.optuna_space`);
- user attrs, one entry per seed in seed order: ``tune_trial_ids`` (the first is the trial
  OptunaSearch knew; it identifies the mirror's trial), ``trial_keys`` (the rows of
  trials.parquet), ``seeds``, ``statuses`` (``results.tables.status``) and ``seed_values`` (null where
  the seed gave none); the study's user attrs hold ``metric``, ``seeds`` and ``spec_hash``;
- ``datetime_start``: the first seed's start; ``datetime_complete``: the latest last result of
  its seeds (Tune's own clock readings, in local time as Optuna writes them). Trial numbers
  follow ``datetime_complete`` (then suggestion order); appended trials follow those already in
  the file.

**Where it differs from the searcher's own study**: the mirror follows Tune's current state.
After ``prunetune resume`` re-runs a seed that had failed, the suggestion's value and state are
those of the finished seeds, while the searcher keeps the outcome it was first told. Optuna's own
trial numbers are suggestion order. Per-epoch values are not mirrored (the Repeater reports none
to Optuna).

**When**: :class:`orchestrator.tune.mirror_callback.OptunaMirror`, a Tune Callback, updates it from the experiment's snapshot as
stored (where ``prunetune resume`` restores from) each time Tune has stored a new one that can change
it, one taken after a trial ended (at most every ``TUNE_GLOBAL_CHECKPOINT_S``, 10 s, see
:mod:`orchestrator.cluster.runtime`), so a suggestion lands a few seconds after its last seed ends; :func:`refresh_mirror` does the same before the
experiment runs (a resumed study starts from a correct mirror, and an empty study is there for
the dashboard), after it ran and when a resumed study has nothing left to run. The mirror never
runs ahead of the stored snapshot: a seed that ended after the last snapshot would be run again by
a resume after a kill (with a new Tune trial id), so mirroring it from the live trials would show a
suggestion that the resumed study then changes. A failure to write it never stops a study: it is
reported (stderr, or Tune's log for the Callback) and the next update repairs it.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.optuna_mirror.db import MirrorStudy, MirrorTrial, Written, write_mirror
from orchestrator.study.directory import Study
from orchestrator.tune.internals import TRIAL_INDEX
from results.tables.snapshot import TUNE_ENDED, TuneTrial, read_snapshot
from results.tables.status import trial_status
from results.tables.storage import OPTUNA_EXPERIMENT
from search_spaces.expand import StudyPlan
from trainables.identity import KeyCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorSpec:
    """What the mirror needs of the study: plain data (the Callback is pickled with the Tuner)."""

    study: MirrorStudy
    metric: str  # search.metric: the record key OptunaSearch optimises
    seeds: tuple[int, ...]  # one Tune trial per seed and suggestion


@dataclass(frozen=True)
class TrialView:
    """What the mirror reads of one Tune trial."""

    trial_id: str
    created: int  # the SearchGenerator's counter: 1 for the first trial it created
    tune_status: str  # PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]  # Tune's config: {"trial": ..., "seeds": [...], "__trial_index__": i}
    last_result: dict[str, Any]
    start_s: float | None  # when Tune first started it (Unix seconds); None before that
    end_s: float | None  # when Tune processed its last result; None before any


def mirror_spec(study: Study, plan: StudyPlan) -> MirrorSpec:
    """The mirror of a study with an Optuna search (``plan.optuna`` set)."""
    optuna = plan.optuna
    assert optuna is not None
    attrs = (
        ("metric", optuna.metric),
        ("seeds", list(optuna.seeds)),
        ("spec_hash", study.spec_hash),
    )
    direction = "maximize" if optuna.mode == "max" else "minimize"
    return MirrorSpec(
        MirrorStudy(study.spec.name, direction, optuna.distributions, attrs),
        optuna.metric,
        optuna.seeds,
    )


def mirror_trials(
    spec: MirrorSpec, views: Sequence[TrialView], keys: KeyCache | None = None
) -> list[MirrorTrial]:
    """The mirror's trials for the Tune trials of the experiment (module docstring), ordered by
    completion time, then suggestion order."""
    keys = keys or KeyCache()
    out = []
    for order, group in enumerate(_groups(sorted(views, key=lambda v: v.created))):
        if len(group) == len(spec.seeds) and all(v.tune_status in TUNE_ENDED for v in group):
            out.append((order, _trial(spec, group, keys)))
    out.sort(key=lambda item: (item[1].end_s, item[0]))
    return [trial for _, trial in out]


def _groups(views: Sequence[TrialView]) -> list[list[TrialView]]:
    """The Repeater's groups: consecutive trials with ``__trial_index__`` 0, 1, 2, ..."""
    groups: list[list[TrialView]] = []
    for view in views:
        index = view.config.get(TRIAL_INDEX)
        if index == 0:
            groups.append([view])
        elif groups and index == len(groups[-1]):
            groups[-1].append(view)
        else:
            expected = len(groups[-1]) if groups else 0
            raise ValueError(
                f"trial {view.trial_id}: {TRIAL_INDEX} {index!r} out of the Repeater's order "
                f"(expected 0 or {expected})"
            )
    return groups


def _trial(spec: MirrorSpec, group: list[TrialView], keys: KeyCache) -> MirrorTrial:
    params = [_params(spec, v) for v in group]
    if any(p != params[0] for p in params):
        raise ValueError(f"trial {group[0].trial_id}: its seeds were given different parameters")
    scores = np.array([_score(v, spec.metric) for v in group], dtype=float)
    finite = ~np.isnan(scores)
    starts = [v.start_s for v in group if v.start_s is not None]
    times = starts + [v.end_s for v in group if v.end_s is not None]
    start = min(starts or times or [0.0])  # 0.0 (1970): no seed ever started
    identities = [keys.resolve(v.config) for v in group]
    return MirrorTrial(
        params=params[0],
        value=float(np.nanmean(scores)) if finite.any() else None,
        start_s=start,
        end_s=max(times or [start]),
        user_attrs={
            "tune_trial_ids": [v.trial_id for v in group],
            "trial_keys": [i.trial_key for i in identities],
            "seeds": [i.cfg.seed for i in identities],
            "statuses": [_status(v) for v in group],
            "seed_values": [float(s) if ok else None for s, ok in zip(scores, finite, strict=True)],
        },
    )


def _params(spec: MirrorSpec, view: TrialView) -> dict[str, Any]:
    out = {}
    for path, _, _ in spec.study.distributions:
        node: Any = view.config["trial"]
        for part in path.split("."):
            node = node[part]
        out[path] = node
    return out


def _score(view: TrialView, metric: str) -> float:
    """What the Repeater records for a seed: its last value of `metric` (NaN for an errored
    trial, which Tune reports to the searcher without a result, or a missing value)."""
    value = view.last_result.get(metric)
    if view.tune_status == "ERROR" or isinstance(value, bool):
        return math.nan
    return float(value) if isinstance(value, (int, float)) else math.nan


def _status(view: TrialView) -> str:
    last = view.last_result
    return trial_status(view.tune_status, last.get("status"), bool(last.get("training_iteration")))


def snapshot_view(trial: TuneTrial) -> TrialView:
    """A trial as the experiment's snapshot records it."""
    meta = json.loads(trial.metadata)
    return TrialView(
        trial.trial_id,
        _counter(trial.trial_id, trial.experiment_tag),
        trial.tune_status,
        trial.config,
        trial.last_result,
        _seconds(meta.get("start_time")),
        _seconds(meta.get("last_result_time")),
    )


def _counter(trial_id: str, tag: str) -> int:
    head = (tag or "").split("_", 1)[0]
    if not head.isdigit():
        raise ValueError(f"trial {trial_id}: experiment_tag {tag!r} has no creation counter")
    return int(head)


def _seconds(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def refresh_mirror(study: Study, plan: StudyPlan) -> Written | None:
    """Bring ``optuna.db`` up to the Optuna experiment's snapshot (an empty study before the
    experiment has one). None for a study without an Optuna search, or when writing failed
    (said on stderr)."""
    if plan.optuna is None:
        return None
    import optuna
    import sqlalchemy.exc

    spec = mirror_spec(study, plan)
    snapshot = read_snapshot(study.fs, study.tune_path(OPTUNA_EXPERIMENT))
    try:
        views = [snapshot_view(t) for t in snapshot.trials] if snapshot else []
        return write_mirror(study.fs, study.path, spec.study, mirror_trials(spec, views))
    except (
        OSError,
        ValueError,  # a Tune state that breaks the Repeater's rules (the message says how)
        sqlite3.Error,
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.OptunaError,
    ) as exc:
        detail = " ".join(str(exc).split())
        print(f"prunetune: optuna.db: not updated ({detail})", file=sys.stderr, flush=True)
        return None
