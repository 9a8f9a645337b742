"""Whole studies on a real local Ray, in-process: grid with a crashed trial, a diverged trial,
an Optuna search. Each is a few 2-3-epoch MNIST-1D trials."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from orch_helpers import optuna_trial_keys, tiny_spec

from orchestrator.cli.app import main
from orchestrator.tune.internals import latest_checkpoint_name
from results.tables.snapshot import read_snapshot
from search_spaces.expand import expand
from search_spaces.spec import load_spec, spec_from_yaml
from trainables.identity import trial_key

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def _trial_dirs(exp: Path) -> set[str]:
    return {p.name for p in exp.iterdir() if p.is_dir()}


def test_grid_study_runs_retries_a_crashed_trial_and_cleans_up(
    local_ray, data_dir, tmp_path, capsys
):
    spec_file = tiny_spec(tmp_path / "grid.yaml", "grid", data_dir, tmp_path / "studies")
    plan = expand(load_spec(str(spec_file)))
    crashed = trial_key(plan.pruned[0])
    (local_ray / f"{crashed}.epoch1").write_text("")  # its worker SIGKILLs itself after epoch 1

    code = main(["run", str(spec_file)])

    out = capsys.readouterr().out.splitlines()
    study = tmp_path / "studies" / "grid"
    assert code == 0
    assert out[-1] == str(study)
    assert out[0] == "trials: 6/6 finished: 6 ok, 0 diverged; 0 running, 0 error, 0 pending"
    trials = pq.read_table(study / "trials.parquet").to_pylist()
    assert sorted(t["trial_key"] for t in trials) == sorted(trial_key(c) for c in plan.trials)
    assert {t["status"] for t in trials} == {"ok"}
    failures = {t["trial_key"]: t["num_failures"] for t in trials}
    assert failures.pop(crashed) == 1 and set(failures.values()) == {0}
    # Where each trial ran (its records), and the driver's environment (study.json).
    ran = {(t["device"], t["torch_version"], t["threads"], t["n_prunable"]) for t in trials}
    assert ran == {("cpu", str(torch.__version__), 1, 3 * 8)}  # 1 CPU each; cnn1d of width 8
    assert json.loads((study / "study.json").read_text())["environment"]["torch_version"] == str(
        torch.__version__
    )
    epochs = pq.read_table(study / "epochs.parquet").to_pylist()
    per_trial = collections.Counter(r["trial_key"] for r in epochs)
    assert len(epochs) == 18 and set(per_trial.values()) == {3}
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == 18
    assert (study / "report.html").stat().st_size > 0
    # Only the final checkpoint of each trial is kept (its name counts the trial's checkpoints,
    # which depends on how many epochs each report to Tune carried), and no directory outside
    # the snapshot.
    exp = study / "tune" / "trials"
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(exp))
    assert _trial_dirs(exp) == {t.logdir for t in snapshot.trials}
    for t in snapshot.trials:
        final = t.last_result["checkpoint_dir_name"]
        assert final == latest_checkpoint_name(t.metadata) and t.last_result["epoch"] == 2
        assert sorted(p.name for p in (exp / t.logdir).glob("checkpoint_*")) == [final]

    assert main(["status", str(study)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[1].startswith(
        "trials: 6/6 finished: 6 ok, 0 diverged; 0 running, 0 error, 0 pending"
    )
    assert status[2].startswith("gain: best ") and "n = 4 pruned trials with a gain" in status[2]

    # Running the same spec again resumes the finished study: nothing runs, same tables.
    before = pq.read_table(study / "epochs.parquet")
    assert main(["run", str(spec_file)]) == 0
    captured = capsys.readouterr()
    assert "every trial already finished" in captured.err
    assert captured.out.splitlines()[-1] == str(study)
    assert pq.read_table(study / "epochs.parquet").equals(before)


def test_diverged_trial_is_recorded_not_retried(local_ray, data_dir, tmp_path, capsys):
    spec_file = tiny_spec(
        tmp_path / "div.yaml",
        "div",
        data_dir,
        tmp_path / "studies",
        pruning=None,
        seeds=1,
        train={"optimizer": "sgd"},
    )

    code = main(["run", str(spec_file), "train.lr=1.0e30"])  # a command-line override

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "trials: 1/1 finished: 0 ok, 1 diverged; 0 running, 0 error, 0 pending"
    # The resolved spec.yaml records the override: its hash is the overridden study's.
    overridden = load_spec(str(spec_file), overrides=["train.lr=1.0e30"])
    stored = (tmp_path / "studies" / "div" / "spec.yaml").read_text()
    assert spec_from_yaml(stored).hash == overridden.hash != load_spec(str(spec_file)).hash
    assert spec_from_yaml(stored).train.lr == 1.0e30
    (trial,) = pq.read_table(tmp_path / "studies" / "div" / "trials.parquet").to_pylist()
    assert trial["status"] == "diverged" and trial["num_failures"] == 0


def test_optuna_study_runs_every_suggestion_once_per_seed(local_ray, data_dir, tmp_path, capsys):
    spec_file = tiny_spec(
        tmp_path / "opt.yaml",
        "opt",
        data_dir,
        tmp_path / "studies",
        pruning={"target": {"choice": ["random", "largest"]}, "period": {"int": [1, 30]}},
        search={
            "algorithm": "optuna",
            "num_samples": 3,
            "metric": "test_acc",
            "mode": "max",
            "seed": 5,
        },
    )

    code = main(["run", str(spec_file)])

    out = capsys.readouterr().out.splitlines()
    study = tmp_path / "studies" / "opt"
    assert code == 0 and out[-1] == str(study)
    assert out[0] == "trials: 2/2 finished: 2 ok, 0 diverged; 0 running, 0 error, 0 pending"
    assert out[1] == "optuna: 6/6 finished: 6 ok, 0 diverged; 0 running, 0 error, 0 pending"
    assert json.loads((study / "study.json").read_text())["experiments"] == ["trials", "optuna"]
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(study / "tune" / "optuna"))
    assert {t.status for t in snapshot.trials} == {"ok"}
    keys = optuna_trial_keys(snapshot, study / "tune" / "optuna", num_samples=3, seeds=2)
    exported = pq.read_table(study / "trials.parquet").to_pylist()
    baselines = {t["trial_key"] for t in exported if t["is_baseline"]}
    assert len(baselines) == 2
    assert sorted(t["trial_key"] for t in exported if not t["is_baseline"]) == sorted(keys)


def test_a_tuner_that_never_snapshotted_is_started_afresh(local_ray, data_dir, tmp_path, capsys):
    """Tune's silent fresh start: tuner.pkl exists (written when the Tuner is built) but no
    snapshot does, as after a crash in the first seconds. Restoring would make Tune start over
    next to the dead session's trial directories; prunetune removes the directory first."""
    from orchestrator.cluster.runtime import trial_capacity
    from orchestrator.study.directory import locate, open_for_run
    from orchestrator.tune.tuner import _new_tuner, _trainable

    spec_file = tiny_spec(
        tmp_path / "stale.yaml", "stale", data_dir, tmp_path / "studies", pruning=None, seeds=1
    )
    spec = load_spec(str(spec_file))
    plan = expand(spec)
    study = open_for_run(locate(spec), spec, plan)
    _new_tuner(study, plan, "trials", _trainable(plan), trial_capacity(1, 0))  # never fitted
    exp = tmp_path / "studies" / "stale" / "tune" / "trials"
    assert (exp / "tuner.pkl").exists() and not list(exp.glob("experiment_state-*"))
    (exp / "trial_dead_00000").mkdir()
    (exp / "trial_dead_00000" / "params.json").write_text("{}")

    assert main(["run", str(spec_file)]) == 0

    captured = capsys.readouterr()
    assert "trials: no snapshot had been written; started it afresh" in captured.err
    assert captured.out.splitlines()[0].startswith("trials: 1/1 finished: 1 ok")
    assert not (exp / "trial_dead_00000").exists()
    assert len(read_snapshot(pafs.LocalFileSystem(), str(exp)).trials) == 1
