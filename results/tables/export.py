"""Build the tables of a study from its Tune trials and their parsed result files.

Rules (the storage contract: results/README.md):

- one epochs row per (trial, epoch): the latest report (:func:`results.tables.history.latest_per_epoch`);
- one trials row per ``trial_key``: an Optuna restore can re-run a trial under a new Tune id with
  the same config, so Tune trials sharing a key are collapsed to the most complete one (status
  ok/diverged, then error, stopped, running, pending; then more epochs; then the smaller id);
- rows in the order of the Tune trials given (``read_tune_study`` sorts them by experiment and
  trial id), epochs ascending, so exporting twice writes identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from results.fits import aggregate
from results.fits.bootstrap import DEFAULT_PLAN, BootstrapPlan
from results.tables import schema
from results.tables.history import latest_per_epoch
from results.tables.snapshot import TuneTrial
from results.tables.status import STATUSES, trial_status
from results.tables.summarize import INPUT_KEYS, summarize
from search_spaces.fits import FitSpec
from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.identity import Identity, KeyCache

_COMPLETENESS = {
    s: i for i, s in enumerate(("ok", "diverged", "error", "stopped", "running", "pending"))
}


@dataclass(frozen=True)
class Tables:
    trials: pa.Table
    epochs: pa.Table
    events: pa.Table
    layer_events: pa.Table
    n_duplicates: int  # Tune trials dropped because another trial had the same trial_key


def build_tables(trials: Sequence[TuneTrial], history: pa.Table, spec_hash: str) -> Tables:
    """trials / epochs / events / layer_events tables from Tune trials and their histories.

    `history` is :func:`results.tables.history.parse_histories` output whose ``source`` indexes `trials`.
    """
    cache = KeyCache()
    resolved = [_resolve(cache, t) for t in trials]
    latest = latest_per_epoch(history)
    cols = _numpy_columns(latest)
    bounds = np.searchsorted(cols["source"], np.arange(len(trials) + 1))
    rows = []
    for i, (t, r) in enumerate(zip(trials, resolved, strict=True)):
        part = {k: v[bounds[i] : bounds[i + 1]] for k, v in cols.items()}
        last_status = part["status"][-1] if len(part["status"]) else None
        status = trial_status(t.tune_status, last_status, len(part["epoch"]) > 0)
        rows.append(_identity(t, r, status) | summarize(part, r.cfg, status))
    keep = _most_complete(rows)
    rows = [rows[i] for i in keep]
    _add_gain(rows, [resolved[i].cfg for i in keep])
    trials_table = _trials_table(rows, [resolved[i].plain for i in keep], spec_hash)
    epochs = _epochs_table(latest, keep, len(trials), rows, spec_hash)
    return Tables(
        trials=trials_table,
        epochs=epochs.drop_columns(list(schema.EVENT_ONLY)),
        events=_events_table(epochs, spec_hash),
        layer_events=layer_events_table(epochs, spec_hash),
        n_duplicates=len(trials) - len(keep),
    )


def _resolve(cache: KeyCache, t: TuneTrial) -> Identity:
    try:
        return cache.resolve(t.config)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(f"{t.experiment}/{t.trial_id}: config['trial']: {exc}") from None


def _identity(t: TuneTrial, r: Identity, status: str) -> dict[str, Any]:
    assert status in STATUSES, status
    return {
        "trial_id": t.trial_id,
        "trial_key": r.trial_key,
        "config_key": r.config_key,
        "baseline_key": r.baseline_key,
        "experiment": t.experiment,
        "status": status,
        "tune_status": t.tune_status,
        "error": t.error if status == "error" else None,
        "num_failures": t.num_failures,
        "is_baseline": r.cfg.is_baseline,
    }


def _most_complete(rows: list[dict]) -> list[int]:
    """Indices of the rows kept: the most complete per trial_key, in input order."""
    best: dict[str, int] = {}
    for i, row in enumerate(rows):
        j = best.get(row["trial_key"])
        if j is None or _rank(row) < _rank(rows[j]):
            best[row["trial_key"]] = i
    return sorted(best.values())


def _rank(row: dict) -> tuple:
    return (_COMPLETENESS[row["status"]], -row["n_epochs"], row["experiment"], row["trial_id"])


def _add_gain(rows: list[dict], cfgs: Sequence[TrialConfig]) -> None:
    """gain and n_baselines of every row (``results.fits.aggregate.matched_gain``).

    An IMP trial measured by ``val_selected`` is compared with its baselines' final test accuracy:
    Jin et al. compare the sparsity level chosen by validation accuracy with the dense model at the
    end of its training (OpenLTH evaluates every level's final model, level 0 being the dense
    one), not with a dense model early-stopped on the validation split.
    """

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=float)

    args = (
        np.array([r["baseline_key"] for r in rows], dtype=object),
        np.array([r["is_baseline"] for r in rows], dtype=bool),
        np.array([r["status"] for r in rows], dtype=object),
    )
    gen = column("generalization")
    gain, n_base = aggregate.matched_gain(*args, gen)
    versus_final = np.array(
        [c.pruning.method == "imp" and c.generalization == "val_selected" for c in cfgs], dtype=bool
    )
    if versus_final.any():
        final = column("test_acc_final")
        base = np.where(args[1], final, gen)  # baselines: their final model; others unchanged
        gain_final, _ = aggregate.matched_gain(*args, base)
        gain = np.where(versus_final, gain_final, gain)
    for row, g, n in zip(rows, gain, n_base, strict=True):
        row["gain"] = float(g) if np.isfinite(g) else None
        row["n_baselines"] = int(n)


def _numpy_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """The columns summarize() reads, and ``source``: floats (NaN = null), ``is_event`` as bool,
    strings as object arrays."""
    out: dict[str, np.ndarray] = {}
    for name in (*INPUT_KEYS, "source"):
        col = table.column(name)
        if name == "is_event":
            out[name] = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        elif pa.types.is_string(col.type):
            out[name] = col.to_numpy(zero_copy_only=False)
        elif name == "source":
            out[name] = col.to_numpy()
        else:
            out[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return out


def _trials_table(rows: list[dict], dicts: list[dict], spec_hash: str) -> pa.Table:
    columns = {name: [r[name] for r in rows] for name, _ in schema.TRIAL_FIELDS}
    for name, path, _ in schema.CONFIG_FIELDS:
        columns[name] = [_get(d, path) for d in dicts]
    return pa.table(columns, schema=schema.with_metadata(schema.TRIALS, "trials", spec_hash))


def _get(d: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d[key]
    return d


def _epochs_table(
    latest: pa.Table, keep: list[int], n_trials: int, rows: list[dict], spec_hash: str
) -> pa.Table:
    """The kept trials' epochs; the per-layer lists (``schema.EVENT_ONLY``) ride along for the
    events and layer_events tables."""
    kept = latest
    if len(keep) < n_trials:
        kept = latest.filter(pc.is_in(latest.column("source"), pa.array(keep, type=pa.int32())))
    position = np.full(max(keep, default=-1) + 1, -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    pos = pa.array(position[kept.column("source").to_numpy()])
    ids = pa.array([r["trial_id"] for r in rows], type=pa.string())
    keys = pa.array([r["trial_key"] for r in rows], type=pa.string())
    columns = {"trial_id": ids.take(pos), "trial_key": keys.take(pos)}
    columns.update({name: kept.column(name) for name in schema.EPOCHS.names[2:]})
    out = pa.table(columns, schema=schema.with_metadata(schema.EPOCHS, "epochs", spec_hash))
    for name in schema.EVENT_ONLY:
        out = out.append_column(name, kept.column(name))
    return out


def _events_table(epochs: pa.Table, spec_hash: str) -> pa.Table:
    ev = epochs.filter(pc.fill_null(epochs.column("is_event"), False))
    per_layer = ev.column("units_removed").combine_chunks()  # list<struct<layer, units>>
    entries = per_layer.flatten()
    by_layer = pa.MapArray.from_arrays(
        per_layer.offsets, entries.field("layer"), entries.field("units"), mask=per_layer.is_null()
    )
    columns = {
        "trial_id": ev.column("trial_id"),
        "trial_key": ev.column("trial_key"),
        "epoch": ev.column("epoch"),
        "acc_before": ev.column("acc_before"),
        "acc_after": ev.column("acc_after"),
        "instability": ev.column("instability"),
        "units_removed": ev.column("units_removed_total"),
        "units_removed_by_layer": by_layer,
        # after the event (records before sparsity_after existed: their sparsity, then post-event)
        "sparsity": pc.coalesce(ev.column("sparsity_after"), ev.column("sparsity")),
        "imp_round": ev.column("imp_round"),
    }
    return pa.table(columns, schema=schema.with_metadata(schema.EVENTS, "events", spec_hash))


def layer_events_table(epochs: pa.Table, spec_hash: str) -> pa.Table:
    """layer_events: one row per (trial, event epoch, layer), in epochs' order.

    `epochs` holds ``trial_id``, ``trial_key``, ``epoch``, ``units_removed`` and
    ``windows_closed`` (one row per trial and epoch, ascending). A ``units_removed`` entry makes a
    row; the ``windows_closed`` entry naming the same (event epoch, layer), reported on a later or
    the same epoch, fills its window columns and ``closed_epoch``. Window columns stay null for
    plain pruning and for a window still open (a running trial).
    """
    has = pc.or_(
        pc.is_valid(epochs.column("units_removed")), pc.is_valid(epochs.column("windows_closed"))
    )
    names = ["trial_id", "trial_key", "epoch", "units_removed", "windows_closed"]
    rows: dict[tuple, dict[str, Any]] = {}
    for r in epochs.filter(has).select(names).to_pylist():
        ids = {"trial_id": r["trial_id"], "trial_key": r["trial_key"]}
        for u in r["units_removed"] or ():
            key = (r["trial_key"], r["epoch"], u["layer"])
            rows[key] = {**ids, "epoch": r["epoch"], "layer": u["layer"], "units": u["units"]}
        for w in r["windows_closed"] or ():
            key = (r["trial_key"], w["event_epoch"], w["layer"])
            row = rows.setdefault(key, {**ids, "epoch": w["event_epoch"], "layer": w["layer"]})
            row.update({k: w[k] for k in _WINDOW_COLUMNS}, closed_epoch=r["epoch"])
    target = schema.with_metadata(schema.LAYER_EVENTS, "layer_events", spec_hash)
    return pa.Table.from_pylist(list(rows.values()), schema=target)


_WINDOW_COLUMNS = ("window_steps", "closed_by", "noise_draws_train", "noise_draws_eval")


def trial_arrays(trials: pa.Table) -> dict[str, np.ndarray]:
    """Every trials-table column as numpy: numbers as float (NaN = null), booleans as bool (null =
    False), the rest (text, lists) as object arrays. What the aggregator and the report read."""
    out: dict[str, np.ndarray] = {}
    for name in trials.column_names:
        col = trials.column(name)
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            out[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_boolean(col.type):
            out[name] = np.asarray(col.fill_null(False).to_pylist(), dtype=bool)
        else:
            out[name] = np.asarray(col.to_pylist(), dtype=object)
    return out


def fits_table(
    trials: pa.Table,
    spec_hash: str,
    plan: BootstrapPlan = DEFAULT_PLAN,
    specs: Sequence[FitSpec] = (),
) -> pa.Table:
    """fits.parquet: :func:`results.fits.aggregate.fits` over a trials table (NaN stored as null)."""
    rows = aggregate.fits(trial_arrays(trials), plan, specs)
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not np.isfinite(value):
                row[key] = None
        row["excluded"] = sorted(row["excluded"].items())
        row["where"] = [list(clause.items()) for clause in row["where"]]
    return pa.Table.from_pylist(rows, schema=schema.with_metadata(schema.FITS, "fits", spec_hash))
