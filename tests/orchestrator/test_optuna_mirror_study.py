"""optuna.db of a real Optuna study on a local Ray: after a run it holds every suggestion as
trials.parquet does; while a study runs each finished suggestion lands in it; after a kill and a
resume it holds each suggestion once. MNIST-1D MLP, 3 epochs, 3-4 suggestions x 2 seeds."""

from __future__ import annotations

import collections
import datetime
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from optuna.trial import TrialState
from orch_helpers import cli_env, kill_session, run_cli, start_cli, tiny_spec, wait_for

from orchestrator.cli.app import main
from orchestrator.optuna_mirror import db as optuna_db
from orchestrator.optuna_mirror.db import storage_url
from results.tables.snapshot import read_snapshot

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]


def _spec(tmp_path: Path, name: str, data, num_samples: int, epochs: int = 3) -> Path:
    return tiny_spec(
        tmp_path / f"{name}.yaml",
        name,
        data,
        tmp_path / "studies",
        model={"name": "mlp", "width": 16},
        train={"epochs": epochs},
        pruning={
            "target": {"choice": ["random", "largest"]},
            "period": {"int": [1, 2]},
            "layers": [{"name": "fc1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2}],
        },
        search={
            "algorithm": "optuna",
            "num_samples": num_samples,
            "metric": "test_acc",
            "mode": "max",
            "seed": 3,
        },
    )


def _load(study: Path) -> optuna.Study:
    return optuna.load_study(study_name=study.name, storage=storage_url(str(study / "optuna.db")))


def _check_against_parquet(study: Path, num_samples: int) -> None:
    """Each suggestion once, COMPLETE, numbered 0..n-1; every Tune trial of the experiment in
    exactly one of them; params those of its seeds' trials.parquet rows, value the mean of their
    last test accuracy. (TPE may suggest a configuration twice: trials.parquet then has one row
    for both, the mirror one trial per suggestion.)"""
    rows = {r["trial_key"]: r for r in pq.read_table(study / "trials.parquet").to_pylist()}
    trials = _load(study).get_trials()
    assert [t.number for t in trials] == list(range(num_samples))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ids = [i for t in trials for i in t.user_attrs["tune_trial_ids"]]
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(study / "tune" / "optuna"))
    assert sorted(ids) == sorted(t.trial_id for t in snapshot.trials)  # each once, none lost
    keys = {k for t in trials for k in t.user_attrs["trial_keys"]}
    assert keys == {k for k, r in rows.items() if not r["is_baseline"]}
    for t in trials:
        seeds = [rows[k] for k in t.user_attrs["trial_keys"]]
        assert t.user_attrs["seeds"] == [r["seed"] for r in seeds] == [0, 1]
        assert {(r["pruning_target"], r["pruning_period"]) for r in seeds} == {
            (t.params["pruning.target"], t.params["pruning.period"])
        }
        assert t.value == pytest.approx(np.mean([r["test_acc_final"] for r in seeds]), abs=1e-12)
        assert t.datetime_start < t.datetime_complete


def test_optuna_db_holds_every_suggestion_as_the_tables_do(
    local_ray, data_dir, tmp_path, capsys, monkeypatch
):
    spec = _spec(tmp_path, "mirrored", data_dir, num_samples=3)
    rebuilds = []  # in_place per rebuild: False = the file was created
    rebuild = optuna_db._rebuild
    monkeypatch.setattr(
        optuna_db,
        "_rebuild",
        lambda *a, in_place: rebuilds.append(in_place) or rebuild(*a, in_place),
    )

    assert main(["run", str(spec)]) == 0

    study = tmp_path / "studies" / "mirrored"
    capsys.readouterr()
    _check_against_parquet(study, 3)
    loaded = _load(study)
    assert loaded.user_attrs["metric"] == "test_acc" and loaded.user_attrs["seeds"] == [0, 1]
    figure = optuna.visualization.plot_optimization_history(loaded)
    assert len(figure.data[0].y) == 3
    # Created empty before the experiment, then only appended to: what the Callback wrote from
    # live trials is what the snapshot gives after the run.
    assert rebuilds == [False]

    # Resuming a finished study rewrites nothing; a deleted mirror is rebuilt the same.
    before = (study / "optuna.db").read_bytes()
    assert main(["resume", str(study)]) == 0
    assert "every trial already finished" in capsys.readouterr().err
    assert (study / "optuna.db").read_bytes() == before
    kept = [(t.params, t.value, t.user_attrs, t.datetime_complete) for t in loaded.get_trials()]
    (study / "optuna.db").unlink()
    assert main(["resume", str(study)]) == 0
    again = [(t.params, t.value, t.user_attrs, t.datetime_complete) for t in _load(study).trials]
    assert again == kept


@pytest.mark.slow
def test_suggestions_land_while_it_runs_and_a_killed_study_resumes_without_duplicates(tmp_path):
    spec = _spec(tmp_path, "killed", tmp_path / "data", num_samples=4, epochs=60)
    study = tmp_path / "studies" / "killed"
    env = cli_env(OMP_NUM_THREADS="1", TUNE_GLOBAL_CHECKPOINT_S="1")
    seen: dict[str, datetime.datetime] = {}  # suggestion -> when the mirror first showed it
    ahead: set[str] = set()  # seeds the mirror showed before the stored snapshot had them ended

    def landed() -> bool:
        if not (study / "optuna.db").exists():  # (opening a missing file would create it)
            return False
        trials = _load(study).get_trials()
        stored = read_snapshot(pafs.LocalFileSystem(), str(study / "tune" / "optuna"))
        stored_trials = stored.trials if stored else ()  # (none before Tune's first snapshot)
        ended = {t.trial_id for t in stored_trials if t.tune_status in ("TERMINATED", "ERROR")}
        for t in trials:
            seen.setdefault(t.user_attrs["tune_trial_ids"][0], datetime.datetime.now())
            ahead.update(set(t.user_attrs["tune_trial_ids"]) - ended)
        return len(trials) >= 1

    log = tmp_path / "run.log"
    proc = start_cli(["run", str(spec)], env, log)
    wait_for(landed, proc, timeout=900, log=log)  # fails if the run ends first
    first = _load(study).get_trials()
    kill_session(proc)

    assert 1 <= len(first) < 4
    assert ahead == set()  # a resume would have run those again
    landed_ids = [t.user_attrs["tune_trial_ids"][0] for t in first]
    assert len(set(landed_ids)) == len(landed_ids)  # each suggestion once while it runs too
    latency = [(seen[t.user_attrs["tune_trial_ids"][0]] - t.datetime_complete) for t in first]
    assert max(latency) < datetime.timedelta(seconds=10), latency
    assert not (study / "trials.parquet").exists()

    time.sleep(1)
    resumed = run_cli(["resume", str(study)], env)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "optuna: 8/8 finished: 8 ok" in resumed.stdout
    _check_against_parquet(study, 4)
    after = {t.user_attrs["tune_trial_ids"][0]: t for t in _load(study).get_trials()}
    for t in first:  # what had landed before the kill is still there, unchanged
        kept = after[t.user_attrs["tune_trial_ids"][0]]
        assert (kept.params, kept.value, kept.user_attrs) == (t.params, t.value, t.user_attrs)
    ids = collections.Counter(i for t in after.values() for i in t.user_attrs["tune_trial_ids"])
    assert len(ids) == 8 and set(ids.values()) == {1}
