"""Public entry points: export a study to Parquet, render its report.

The orchestrator calls :func:`export_study` then :func:`write_report` at the end of ``run`` and
``resume``, and every ``report_every`` seconds while they run (``orchestrator.study.live``: a report
with a banner); ``prunetune aggregate`` / ``prunetune report`` call them on demand. A study that is
still running, or was interrupted, exports what its snapshot and result files hold; the summary
says which trials are unfinished.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.fits.bootstrap import DEFAULT_PLAN, BootstrapPlan
from results.tables import storage
from results.tables.export import Tables, build_tables, fits_table
from results.tables.history import read_histories
from results.tables.snapshot import TuneStudy, read_study
from results.tables.status import INCOMPLETE, STATUSES
from results.tables.storage import REPORT_FILE, TUNE_DIR, StudyMeta, table_file
from search_spaces.fits import DEFAULT_FIT, fits_from_spec_text
from trainables.errors import UserError


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote and found."""

    study_dir: str
    name: str
    spec_hash: str
    experiments: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]  # (experiment, why): no snapshot written yet
    n_trials: int
    by_status: dict[str, int]  # every status of results.tables.summarize.STATUSES, zeros included
    incomplete: tuple[str, ...]  # trial ids of stopped / running / pending trials
    n_duplicates: int  # Tune trials collapsed into another with the same trial_key
    n_epochs: int
    n_events: int
    n_fits: int
    pooled: dict[str, Any] | None  # the trial-level, all-trials mean_instability~gain fit row
    files: dict[str, str] = field(default_factory=dict)  # table name -> path written
    n_planned: int | None = None  # the trials the study's plan holds (None: spec unreadable)


@dataclass(frozen=True)
class StudyTables:
    """A study's tables built in memory from its Tune experiments (nothing written)."""

    meta: StudyMeta
    tune: TuneStudy
    tables: Tables


def study_tables(study_dir: str) -> StudyTables:
    """Read the study's Tune experiments and build the trials / epochs / events / layer_events
    tables.

    Raises UserError when `study_dir` is not a study directory or holds no Tune experiment.
    Safe on a running study: it only reads.
    """
    fs, path = storage.resolve(study_dir)
    meta = storage.read_meta(fs, path, study_dir)
    tune = read_study(fs, posixpath.join(path, TUNE_DIR))
    if not tune.experiments and not tune.unreadable:
        raise UserError(f"study directory {study_dir!r}: no Ray Tune experiment under tune/")
    history = read_histories(fs, [t.result_path for t in tune.trials])
    return StudyTables(meta, tune, build_tables(tune.trials, history, meta.spec_hash))


def export_study(study_dir: str, plan: BootstrapPlan = DEFAULT_PLAN) -> ExportSummary:
    """Write the study's trials / epochs / events / layer_events / fits Parquet files
    (:func:`study_tables`).

    `study_dir` is a local path or a pyarrow filesystem URI. The fits are the defaults plus those
    of the study's ``spec.yaml`` (``search_spaces.fits``). Idempotent: a second export of an
    unchanged study writes byte-identical files.
    """
    built = study_tables(study_dir)
    fs, path = storage.resolve(study_dir)
    meta, tables = built.meta, built.tables
    specs = fits_from_spec_text(meta.spec_text, f"{study_dir}/{storage.SPEC_FILE}")
    fits = fits_table(tables.trials, meta.spec_hash, plan, specs)
    files = write_tables(fs, path, named_tables(tables, fits))
    return _summary(study_dir, meta, built.tune, tables, fits, files)


@dataclass(frozen=True)
class GainExtremes:
    """The best and worst gain over the pruned trials that have one."""

    best: float
    best_trial: str  # trial_key
    best_instability: float | None
    worst: float
    worst_trial: str
    worst_instability: float | None
    n: int  # pruned trials with a gain


def gain_extremes(trials: pa.Table) -> GainExtremes | None:
    """Best / worst gain of a trials table's pruned trials; None when none has a gain."""
    rows = [
        r
        for r in trials.select(["is_baseline", "gain", "trial_key", "mean_instability"]).to_pylist()
        if not r["is_baseline"] and r["gain"] is not None and math.isfinite(r["gain"])
    ]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["gain"])
    worst = min(rows, key=lambda r: r["gain"])
    return GainExtremes(
        best["gain"],
        best["trial_key"],
        best["mean_instability"],
        worst["gain"],
        worst["trial_key"],
        worst["mean_instability"],
        len(rows),
    )


def named_tables(tables: Tables, fits: pa.Table) -> dict[str, pa.Table]:
    """The tables :func:`export_study` writes, by name (:func:`write_tables`' argument)."""
    return {
        "trials": tables.trials,
        "epochs": tables.epochs,
        "events": tables.events,
        "layer_events": tables.layer_events,
        "fits": fits,
    }


def write_tables(
    fs: pafs.FileSystem, study_path: str, tables: dict[str, pa.Table]
) -> dict[str, str]:
    """Write each table as ``<name>.parquet`` atomically; returns table name -> path."""
    files = {}
    for name, table in tables.items():
        target = posixpath.join(study_path, table_file(name))
        storage.write_parquet(fs, target, table)
        files[name] = target
    return files


def write_report(study_dir: str, out: str | None = None, *, running: str | None = None) -> str:
    """Render ``report.html`` (or `out`) from the study's Parquet files; returns the path.

    Exports first when ``trials.parquet`` is missing. `out` may be a local path or a URI.
    `running`: the banner of a report of a running study (:func:`results.tables.status.running_banner`;
    the page title then starts with ``running:``); None, the default, for a final report.
    """
    from results.report.data import CURVE_COLUMNS, build_report_data, columns, epoch_trials
    from results.report.page import render_report

    fs, path = storage.resolve(study_dir)
    meta = storage.read_meta(fs, path, study_dir)
    if fs.get_file_info(posixpath.join(path, table_file("trials"))).type == pafs.FileType.NotFound:
        export_study(study_dir)
    trials = _read(fs, posixpath.join(path, table_file("trials")))
    fits = _read(fs, posixpath.join(path, table_file("fits")))
    curves = epoch_trials(columns(trials))
    epochs = _read(
        fs,
        posixpath.join(path, table_file("epochs")),
        columns=list(CURVE_COLUMNS),
        filters=[("trial_id", "in", curves or [""])],
    )
    data = build_report_data(meta, trials, epochs, fits)
    html = render_report(data, running=running)
    if out is None:
        out_fs, target, shown = (
            fs,
            posixpath.join(path, REPORT_FILE),
            posixpath.join(study_dir, REPORT_FILE),
        )
    else:
        out_fs, target = storage.resolve(out)
        shown = out
    storage.write_bytes(out_fs, target, html.encode("utf-8"))
    return shown


def _read(fs: pafs.FileSystem, path: str, **kwargs: Any) -> pa.Table:
    try:
        return pq.read_table(path, filesystem=fs, **kwargs)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `prunetune aggregate` first") from None


def _summary(study_dir, meta, tune, tables: Tables, fits: pa.Table, files) -> ExportSummary:
    trials = tables.trials
    status = trials.column("status").to_pylist()
    counts = Counter(status)
    ids = trials.column("trial_id").to_pylist()
    pooled = None
    for row in fits.to_pylist():
        if (row["fit"], row["x"], row["y"], row["level"], row["grouping"]) == (
            DEFAULT_FIT,
            "mean_instability",
            "gain",
            "trial",
            "all",
        ):
            pooled = row
            break
    return ExportSummary(
        study_dir=study_dir,
        name=meta.name,
        spec_hash=meta.spec_hash,
        experiments=tune.experiments,
        unreadable=tune.unreadable,
        n_trials=trials.num_rows,
        by_status={s: counts.get(s, 0) for s in STATUSES},
        incomplete=tuple(i for i, s in zip(ids, status, strict=True) if s in INCOMPLETE),
        n_duplicates=tables.n_duplicates,
        n_epochs=tables.epochs.num_rows,
        n_events=tables.events.num_rows,
        n_fits=fits.num_rows,
        pooled=pooled,
        files=files,
        n_planned=planned_trials(meta.spec_text),
    )


def planned_trials(spec_text: str) -> int | None:
    """How many trials the study's plan holds (Tune creates some only as the study runs); None
    when the stored spec cannot be read."""
    from search_spaces.expand import expand
    from search_spaces.spec import spec_from_yaml

    try:
        plan = expand(spec_from_yaml(spec_text))
    except UserError:
        return None
    return len(plan.trials) + (plan.optuna.num_trials if plan.optuna else 0)
