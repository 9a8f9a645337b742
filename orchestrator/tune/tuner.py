"""Build, restore and run a study's Ray Tune experiments (the only module building Tuners).

A study has the experiment ``trials`` (every fixed trial: grid or pre-sampled random configs x
seeds, plus the matched baselines) and, for an Optuna search, ``optuna``: Tune's OptunaSearch
(TPE seeded with ``search.seed``, in-memory Optuna storage so the Optuna study lives inside
Tune's own snapshot) wrapped in a ``Repeater`` that runs each suggestion once per seed
(``config["seeds"][__trial_index__]``). They run in that order, in one Ray session.

Choices, with their reasons (measured here: bench/sweep_overhead.py; Ray Tune 2.60's behaviour):

- ``reuse_actors=True``: a new actor that imports torch costs ~1.85 s a trial.
- ``max_concurrent_trials`` always set (the spec's value, else what the cluster fits): with a
  searcher, Tune would otherwise keep only one trial pending.
- ``FailureConfig(max_failures=retries)``: a failed trial is retried from its last checkpoint.
  A diverged trial ends normally (its last record says so) and is not retried.
- No ``num_to_keep``: checkpoints are pruned by :mod:`orchestrator.tune.janitor` (why: see there).
- Resume: first the damaged checkpoints a restore would read are set aside, one line each
  (:mod:`orchestrator.tune.damaged`); then
  ``Tuner.restore(path, trainable, resume_errored=True)``, never ``restart_errored``
  (with OptunaSearch a restarted trial gets an id the searcher never issued: KeyError).
- Tune's silent fresh restart: ``can_restore`` is true as soon as ``tuner.pkl`` exists, but with
  no snapshot Tune logs an error and starts over *inside the same directory*, next to the dead
  session's trial directories. Such a directory holds no result any snapshot refers to (the
  first snapshot is taken at the first step), so it is removed and the experiment started anew
  from the current spec: that keeps one trial directory per trial and the results exact.
- A full disk stops the experiment at its first failed write (:mod:`orchestrator.tune.diskfull`);
  the run state's last good set (:mod:`orchestrator.tune.good_state`) is put back whole before a
  restore.
- Before a restore, the trial directories its snapshot does not list are removed: trials created
  after that snapshot, which the restored searcher generates again (a grid trial under the same
  id, hence the same directory). Left in place, the rerun would append to the first attempt's
  ``result.json`` and checkpoints. A resumed trial's ``result.json`` that a full disk cut short
  is mended, so that no epoch's line is lost (:mod:`orchestrator.tune.result_tails`).
- ``result.json`` is written by :class:`RecordLogger`: Tune's JSON logger without Tune's copy of
  the trial config in every line (``params.json`` holds it once), so each line is the record plus
  Tune's few keys and the export parses it whole, fast. A trial reports several epochs at once
  (``report_batch_s``: each ``tune.report`` is a round trip to this driver); the logger writes
  each of them as its own line, so ``result.json`` stays one line per epoch.
- The Optuna experiment is mirrored into ``optuna.db`` for Optuna's own tools
  (:mod:`orchestrator.optuna_mirror.mirror`): refreshed from the snapshot before and after ``fit``, and
  by :class:`~orchestrator.tune.mirror_callback.OptunaMirror` each time Tune stored a new snapshot.
- Tune's console output goes to stderr with ``-v``, else nowhere (``verbose=0`` still prints a
  header), so stdout stays for the command's own result lines; progress comes from
  :class:`ProgressCallback`, and so does the one line per failed trial (Tune's own printing of
  each failure's traceback, ``TUNE_PRINT_ALL_TRIAL_ERRORS``, is on only with ``-v``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from orchestrator.optuna_mirror.mirror import mirror_spec, refresh_mirror
from orchestrator.study.directory import Study
from orchestrator.study.status import expected_trials
from orchestrator.tune.damaged import set_aside_damaged
from orchestrator.tune.diskfull import DiskGuard, disk_full_error, stop_reason, watching
from orchestrator.tune.good_state import restore_good_state
from orchestrator.tune.janitor import CheckpointJanitor, prune_checkpoints, remove_orphans
from orchestrator.tune.mirror_callback import OptunaMirror
from orchestrator.tune.progress import ProgressCallback
from orchestrator.tune.result_tails import mend_result_files
from results.tables.snapshot import TUNE_ENDED, Snapshot, phase, read_snapshot
from results.tables.storage import OPTUNA_EXPERIMENT, TRIALS_EXPERIMENT, TUNE_DIR, join_uri
from search_spaces.expand import StudyPlan
from search_spaces.tune_space import grid_param_space, optuna_param_space
from trainables.errors import UserError
from trainables.records import BATCH_KEY

PRINT_ERRORS_ENV = "TUNE_PRINT_ALL_TRIAL_ERRORS"  # read by Tune's controller when fit starts


class RecordLogger(JsonLoggerCallback):
    """Tune's ``result.json`` logger, minus the config copy in every line (module docstring), one
    line per epoch: a batched report's earlier epochs (``trainables.records.BATCH_KEY``)
    each get their own line, with the report's Tune keys, before the newest epoch's. The earlier
    epochs are then taken out of the result (Tune lets callbacks change it in place; this logger
    is the first callback), so that Tune's snapshot keeps each trial's newest record only,
    however many epochs a report holds."""

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        latest = {k: v for k, v in result.items() if k not in ("config", BATCH_KEY)}
        for record in result.pop(BATCH_KEY, None) or ():
            super().log_trial_result(iteration, trial, {**latest, **record})
        super().log_trial_result(iteration, trial, latest)


@dataclass(frozen=True)
class ExperimentOutcome:
    """What one experiment's final snapshot says after a run."""

    experiment: str
    counts: dict[str, int]  # results.tables.status.STATUSES -> trials
    resumed: bool  # restored from an earlier session's snapshot
    discarded_stale: bool  # a never-snapshotted directory was removed first
    orphans_removed: tuple[str, ...]
    interrupted: bool  # fit returned with trials unfinished: Ctrl-C (Tune's graceful stop)


def run_experiment(
    study: Study, plan: StudyPlan, experiment: str, concurrency: int, verbose: bool = False
) -> ExperimentOutcome:
    """Run (or resume) one experiment to the end; Ray must be initialised. Tune's own console
    output (its banner, its tables, its "Resume experiment with: Tuner.restore(...)" hint, which
    `prunetune resume` replaces) is shown only when `verbose`."""
    fs, path = study.fs, study.tune_path(experiment)
    for name in restore_good_state(fs, path):  # a run-state file cut short by a full disk
        print(
            f"prunetune: {experiment}: {name} was missing or cut short; "
            "put back the last good run state",
            file=sys.stderr,
            flush=True,
        )
    state = phase(fs, path)
    discarded = state == "stale"
    if discarded:
        fs.delete_dir(path)
    trainable = _trainable(plan)
    if experiment == OPTUNA_EXPERIMENT:  # a resumed study's mirror catches up before it runs
        refresh_mirror(study, plan)
    # Trials the restored state does not know (created after its snapshot) run again from the start
    unknown = remove_orphans(fs, path) if state == "snapshotted" else []
    if state == "snapshotted":
        uri = study.tune_uri(experiment)
        if not tune.Tuner.can_restore(uri):
            raise UserError(f"{uri}: has Tune snapshots but no tuner.pkl; cannot resume it")
        for line in [*set_aside_damaged(fs, path), *mend_result_files(fs, path)]:
            print(f"prunetune: {line}", file=sys.stderr, flush=True)
        tuner = tune.Tuner.restore(uri, trainable, resume_errored=True)
    else:
        tuner = _new_tuner(study, plan, experiment, trainable, concurrency)
    with _tune_output(verbose), watching(study.uri):
        try:
            tuner.fit()
        except Exception:  # on a full disk, Tune's own reading of cut-short files after the stop
            if not stop_reason():
                raise
    if stop_reason():
        raise disk_full_error(stop_reason(), study.uri)
    prune_checkpoints(fs, path)
    orphans = [*unknown, *remove_orphans(fs, path)]
    if experiment == OPTUNA_EXPERIMENT:
        refresh_mirror(study, plan)
    snapshot = read_snapshot(fs, path) or Snapshot("", ())
    expected = expected_trials(plan, experiment)
    # After a normal end every trial is TERMINATED or ERROR; anything else means Tune stopped on
    # SIGINT (it snapshots, then returns from fit instead of raising).
    unfinished = any(t.tune_status not in TUNE_ENDED for t in snapshot.trials)
    interrupted = unfinished or len(snapshot.trials) < expected
    return ExperimentOutcome(
        experiment,
        snapshot.counts(expected),
        state == "snapshotted",
        discarded,
        tuple(orphans),
        interrupted,
    )


@contextlib.contextmanager
def _tune_output(verbose: bool) -> Iterator[None]:
    """Tune's prints to stderr (`verbose`) or nowhere; its warnings and error logs too unless
    `verbose`."""
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    print_errors = os.environ.get(PRINT_ERRORS_ENV)
    with open(os.devnull, "w") as devnull:
        target = sys.stderr if verbose else devnull
        if not verbose:  # failures have their own lines (ProgressCallback, DiskGuard)
            tune_logger.setLevel(logging.CRITICAL)
            os.environ[PRINT_ERRORS_ENV] = "0"
        try:
            with contextlib.redirect_stdout(target):
                yield
        finally:
            tune_logger.setLevel(level)
            if print_errors is None:
                os.environ.pop(PRINT_ERRORS_ENV, None)
            else:
                os.environ[PRINT_ERRORS_ENV] = print_errors


def trial_dirname(trial: tune.experiment.Trial) -> str:
    """Short trial directory names (Tune's default embeds the whole flattened config)."""
    return f"trial_{trial.trial_id}"


def _trainable(plan: StudyPlan):
    from trainables.tune_trainable import train_fn

    return tune.with_resources(train_fn, {"cpu": plan.resources.cpu, "gpu": plan.resources.gpu})


def _new_tuner(
    study: Study, plan: StudyPlan, experiment: str, trainable, concurrency: int
) -> tune.Tuner:
    # Order matters on restore (callback state is matched by position): keep it fixed.
    callbacks = [RecordLogger(), ProgressCallback(experiment), CheckpointJanitor(), DiskGuard()]
    if experiment == OPTUNA_EXPERIMENT:
        callbacks.append(OptunaMirror(mirror_spec(study, plan)))
    run_config = tune.RunConfig(
        name=experiment,
        storage_path=join_uri(study.uri, TUNE_DIR),
        failure_config=tune.FailureConfig(max_failures=plan.retries),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=callbacks,
        verbose=0,
    )
    frequency = {
        "checkpoint_frequency": plan.checkpoint_frequency,
        "report_batch_s": plan.report_batch_s,
    }
    if experiment == TRIALS_EXPERIMENT:
        return tune.Tuner(
            trainable,
            param_space=grid_param_space(plan.trials) | frequency,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=run_config,
        )
    return tune.Tuner(
        trainable,
        param_space=_optuna_space(plan) | frequency,
        tune_config=tune.TuneConfig(
            search_alg=_optuna_searcher(plan),
            num_samples=expected_trials(plan, OPTUNA_EXPERIMENT),
            max_concurrent_trials=concurrency,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=run_config,
    )


def _optuna_space(plan: StudyPlan) -> dict:
    assert plan.optuna is not None
    return optuna_param_space(plan.optuna) | {"seeds": list(plan.optuna.seeds)}


def _optuna_searcher(plan: StudyPlan):
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    assert plan.optuna is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    searcher = OptunaSearch(
        metric=plan.optuna.metric,
        mode=plan.optuna.mode,
        sampler=optuna.samplers.TPESampler(seed=plan.optuna.seed),
    )
    return Repeater(searcher, repeat=len(plan.optuna.seeds), set_index=True)
