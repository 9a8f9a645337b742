"""Where a study stands, from Tune's stored snapshots (no Ray runtime; nothing written).

Per experiment: trials per status (``results.tables.status``), where pending also counts the trials
the searcher has not created yet (expected from the plan). "running" means running when the
snapshot was taken: after a crash those trials resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from orchestrator.study.directory import Study
from results.tables.snapshot import phase, read_snapshot
from results.tables.status import count_statuses, format_counts
from results.tables.storage import OPTUNA_EXPERIMENT
from search_spaces.expand import StudyPlan


@dataclass(frozen=True)
class ExperimentStatus:
    experiment: str
    phase: str  # absent | stale | snapshotted
    counts: dict[str, int]  # results.tables.status.STATUSES -> trials
    expected: int
    snapshot_age_s: float | None  # seconds since the snapshot file was written


def expected_trials(plan: StudyPlan, experiment: str) -> int:
    """How many trials the experiment has when complete."""
    if experiment == OPTUNA_EXPERIMENT:
        assert plan.optuna is not None
        return plan.optuna.num_trials
    return len(plan.trials)


def experiment_status(study: Study, plan: StudyPlan, experiment: str) -> ExperimentStatus:
    path = study.tune_path(experiment)
    expected = expected_trials(plan, experiment)
    snapshot = read_snapshot(study.fs, path)
    if snapshot is None:
        counts = count_statuses((), expected)
        return ExperimentStatus(experiment, phase(study.fs, path), counts, expected, None)
    mtime = study.fs.get_file_info(snapshot.file).mtime
    age = time.time() - mtime.timestamp() if mtime is not None else None
    return ExperimentStatus(experiment, "snapshotted", snapshot.counts(expected), expected, age)


def interrupted(status: ExperimentStatus) -> ExperimentStatus:
    """An experiment's status with its trials that were running when its driver stopped counted
    as ``interrupted`` (a resume continues them from their checkpoints), none as running."""
    counts = dict(status.counts)
    if counts["running"]:
        counts["interrupted"], counts["running"] = counts["running"], 0
    return dataclasses.replace(status, counts=counts)


def is_complete(study: Study, plan: StudyPlan, experiment: str) -> bool:
    """True when the stored snapshot shows every expected trial finished (ok or diverged)."""
    snapshot = read_snapshot(study.fs, study.tune_path(experiment))
    return snapshot is not None and snapshot.complete(expected_trials(plan, experiment))


def format_status(status: ExperimentStatus) -> str:
    """One line per experiment for `prunetune status`."""
    if status.phase == "absent":
        note = "not started"
    elif status.phase == "stale":
        note = "started, no snapshot yet (a resume starts it afresh)"
    else:
        note = (
            f"snapshot {status.snapshot_age_s:.0f}s old"
            if status.snapshot_age_s is not None
            else ""
        )
    counts = format_counts(status.counts, status.expected)
    return f"{status.experiment}: {counts}" + (f" ({note})" if note else "")
