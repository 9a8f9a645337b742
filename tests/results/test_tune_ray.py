"""Export of a REAL Ray Tune study (tune_fixture): two experiments, retries, orphans, Ctrl-C."""

from __future__ import annotations

import argparse
import os

import pyarrow.parquet as pq
import pytest
from tune_fixture import INTERRUPTED, TRIALS, config, expected_record

from results import commands
from results.api import export_study, write_report
from results.tables.snapshot import read_study
from results.tables.storage import TABLES, resolve
from trainables.identity import trial_key

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import ray
    from tune_fixture import make_study

    # RAY_AUTH_MODE stays as the environment had it (see tests/trainables/test_trainable.py).
    ray.init("local", num_cpus=2, include_dashboard=False)
    try:
        path = make_study(str(tmp_path_factory.mktemp("results")))
    finally:
        ray.shutdown()
    return path


@pytest.fixture(scope="module")
def exported(study):
    summary = export_study(study)
    return summary, {name: pq.read_table(os.path.join(study, f"{name}.parquet")) for name in TABLES}


def test_reader_sees_what_experiment_analysis_sees(study):
    from ray.tune import ExperimentAnalysis

    fs, path = resolve(study)
    ours = read_study(fs, os.path.join(path, "tune"))
    assert ours.experiments == ("interrupted", "trials") and ours.unreadable == ()
    theirs = []
    for name in ours.experiments:
        analysis = ExperimentAnalysis(os.path.join(study, "tune", name))
        theirs += [(name, t.trial_id, t.status, t.config, t.path) for t in analysis.trials]
    restored = {"RUNNING": "PENDING"}  # Tune restores a running trial as pending
    mine = [
        (
            t.experiment,
            t.trial_id,
            restored.get(t.tune_status, t.tune_status),
            t.config,
            os.path.dirname(t.result_path),
        )
        for t in ours.trials
    ]
    assert sorted(mine) == sorted(theirs)
    assert len(mine) == len(TRIALS) + len(INTERRUPTED)


def test_row_counts_statuses_and_what_is_incomplete(exported):
    summary, tables = exported
    assert summary.n_duplicates == 1  # the errored orphan of ("random", 0) folds into the ok one
    assert summary.n_trials == tables["trials"].num_rows == len(TRIALS) + len(INTERRUPTED) - 1
    assert summary.by_status == {
        "ok": 10,
        "diverged": 1,
        "error": 1,
        "stopped": 1,
        "running": 1,
        "pending": 1,
    }
    statuses = dict(
        zip(
            tables["trials"].column("trial_id").to_pylist(),
            tables["trials"].column("status").to_pylist(),
            strict=True,
        )
    )
    assert sorted(statuses[t] for t in summary.incomplete) == ["pending", "running", "stopped"]
    # 10 finished trials x 6 epochs; diverged at epoch 2; error after epoch 0 (twice: retried);
    # stopped and interrupted after epoch 1; pending never reported
    assert summary.n_epochs == tables["epochs"].num_rows == 10 * 6 + 3 + 1 + 2 + 2
    # events at epochs 1 and 3: 7 finished pruned trials x 2, then one each for the diverged,
    # stopped and interrupted trials (the errored one died before its first event)
    assert summary.n_events == tables["events"].num_rows == 7 * 2 + 3
    errors = [e for e in tables["trials"].column("error").to_pylist() if e]
    assert len(errors) == 1 and "fake trainable failure" in errors[0]
    assert summary.pooled["n"] == 6 and dict(summary.pooled["excluded"]) == {
        "diverged": 1, "error": 1, "incomplete": 3, "no_baseline": 1,
    }  # fmt: skip


def test_a_retried_trial_has_each_epoch_once_with_the_reported_values(exported):
    _, tables = exported
    flaky = config("largest", 1)
    trials = tables["trials"].to_pylist()
    (row,) = [r for r in trials if r["trial_key"] == trial_key(flaky)]
    assert row["status"] == "ok" and row["num_failures"] == 1
    epochs = [r for r in tables["epochs"].to_pylist() if r["trial_id"] == row["trial_id"]]
    assert [r["epoch"] for r in epochs] == list(range(6))
    assert [r["training_iteration"] for r in epochs] == [1, 2, 3, 4, 5, 6]  # latest reports
    for r in epochs:
        expected = expected_record(flaky, r["epoch"])
        assert r["test_acc"] == pytest.approx(expected["test_acc"])
        assert (
            r["instability"] == pytest.approx(expected["instability"])
            if expected["is_event"]
            else r["instability"] is None
        )


def test_second_export_writes_identical_files(study, exported):
    before = {n: open(os.path.join(study, f"{n}.parquet"), "rb").read() for n in TABLES}
    export_study(study)
    after = {n: open(os.path.join(study, f"{n}.parquet"), "rb").read() for n in TABLES}
    assert before == after


def test_uri_study_exports_the_same_tables(study, exported):
    _, tables = exported
    export_study(f"file://{study}")
    assert pq.read_table(os.path.join(study, "trials.parquet")).equals(tables["trials"])


def test_cli_aggregate_and_report(study, exported, capsys, tmp_path):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["aggregate", study])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "status: 10 ok, 1 diverged, 1 error, 1 stopped, 1 running, 1 pending" in out
    assert (
        "incomplete: 3 trial(s)" in out
        and "pooled fit gain ~ mean_instability (trial level, n=6)" in out
    )
    target = tmp_path / "r.html"
    args = parser.parse_args(["report", study, "-o", str(target)])
    assert args.func(args) == 0
    assert "fake-study" in target.read_text()
    assert write_report(study) == os.path.join(study, "report.html")
