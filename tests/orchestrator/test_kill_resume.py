"""SIGKILL a whole study (driver, raylet, GCS, workers) partway through, resume it, and compare.

The study runs as a real `prunetune run` subprocess in its own session; the kill takes every
process of that session at once, so nothing gets to write a last snapshot. Snapshots are taken
every second (TUNE_GLOBAL_CHECKPOINT_S=1) so that the kill reliably lands between two of them with
trials part-way: trials then resume from checkpoints older than their last reported epoch.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from orch_helpers import (
    cli_env,
    kill_session,
    optuna_trial_keys,
    progressed,
    run_cli,
    stable_rows,
    start_cli,
    tiny_spec,
    wait_for,
)

from results.tables.snapshot import read_snapshot

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}
# Epochs of a few hundredths of a second, reported in batches of 0.5 s (the default
# report_batch_s): a trial runs for a few snapshots, with a checkpoint after its first report.
EPOCHS = 40


def _kill_midway(args: list[str], exp: Path, log: Path, env: dict, **condition) -> None:
    """Start `prunetune ARGS`, wait for `progressed(exp, **condition)`, kill its session."""
    proc = start_cli(args, cli_env(**env), log)
    wait_for(progressed(exp, **condition), proc, timeout=600, log=log)
    assert kill_session(proc) >= 3  # the driver and at least GCS and raylet died with it
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(exp))
    assert any(t.status != "ok" for t in snapshot.trials)


def test_killed_study_resumes_to_exactly_the_uninterrupted_numbers(tmp_path):
    storage, data = tmp_path / "studies", tmp_path / "data"
    # checkpoint_frequency 2: epochs after a trial's last checkpoint are re-run and re-reported.
    spec = tiny_spec(
        tmp_path / "s.yaml",
        "exact",
        data,
        storage,
        train={"epochs": EPOCHS},
        checkpoint_frequency=2,
    )
    reference = run_cli(["run", str(spec), "--name", "reference"], cli_env(**ENV))
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = storage / "killed"
    _kill_midway(
        ["run", str(spec), "--name", "killed"],
        killed / "tune" / "trials",
        tmp_path / "run.log",
        ENV,
        min_epochs=4,
        checkpointed=True,  # a trial to continue from its checkpoint
    )
    assert not (killed / "trials.parquet").exists()

    resumed = run_cli(["resume", str(killed)], cli_env(**ENV))

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.splitlines()[-1] == str(killed)
    ref = storage / "reference"
    epochs = stable_rows(killed / "epochs.parquet", ("trial_key", "epoch"))
    assert len(epochs) == 6 * EPOCHS
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == len(epochs)
    assert epochs == stable_rows(ref / "epochs.parquet", ("trial_key", "epoch"))
    events = stable_rows(killed / "events.parquet", ("trial_key", "epoch"))
    assert events and events == stable_rows(ref / "events.parquet", ("trial_key", "epoch"))
    trials = stable_rows(killed / "trials.parquet", ("trial_key",))
    assert len(trials) == 6 and {t["status"] for t in trials} == {"ok"}
    assert trials == stable_rows(ref / "trials.parquet", ("trial_key",))
    exp = killed / "tune" / "trials"
    final = read_snapshot(pafs.LocalFileSystem(), str(exp)).trials
    assert {p.name for p in exp.iterdir() if p.is_dir()} == {t.logdir for t in final}
    # Some trial continued from a checkpoint (rather than being started over).
    assert any(
        t.last_result["iterations_since_restore"] < t.last_result["training_iteration"]
        for t in final
    )


def test_killed_optuna_study_resumes_without_orphans_or_duplicates(tmp_path):
    storage, data = tmp_path / "studies", tmp_path / "data"
    spec = tiny_spec(
        tmp_path / "o.yaml",
        "optuna",
        data,
        storage,
        train={"epochs": 30},
        pruning={"target": {"choice": ["random", "largest"]}, "period": {"int": [1, 30]}},
        search={
            "algorithm": "optuna",
            "num_samples": 4,
            "metric": "test_acc",
            "mode": "max",
            "seed": 1,
        },
    )
    study = storage / "optuna"
    exp = study / "tune" / "optuna"
    # Snapshots every 3 s leave time to kill while a trial exists that no snapshot lists.
    env = ENV | {"TUNE_GLOBAL_CHECKPOINT_S": "3"}
    _kill_midway(["run", str(spec)], exp, tmp_path / "run.log", env, min_epochs=2, unlisted=True)

    resumed = run_cli(["resume", str(study)], cli_env(**ENV))

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "optuna: 8/8 finished: 8 ok" in resumed.stdout
    assert "orphan trial directories left by a restore" in resumed.stderr
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(exp))
    assert {t.status for t in snapshot.trials} == {"ok"}
    keys = optuna_trial_keys(snapshot, exp, num_samples=4, seeds=2)  # no orphan directories
    exported = pq.read_table(study / "trials.parquet").to_pylist()
    pruned = [t["trial_key"] for t in exported if not t["is_baseline"]]
    assert sorted(pruned) == sorted(keys)  # every trial once, no duplicate rows
    assert {t["status"] for t in exported} == {"ok"}
    epochs = pq.read_table(study / "epochs.parquet").to_pylist()
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == len(epochs) == 30 * len(exported)
