"""A study in an S3 bucket, end to end through the real command line, against a real S3 API.

The S3 server (moto, tests/s3/conftest.py) listens on 127.0.0.1; the CLI processes reach it only
through ``AWS_ENDPOINT_URL`` and the standard credential variables. One reference study runs on
local disk; the same spec runs in the bucket, is SIGKILLed partway (driver, GCS, raylet, workers
at once) and resumed from its URI, and every table must equal the reference's.
"""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import pytest
from orch_helpers import (
    VOLATILE,
    cli_env,
    kill_session,
    run_cli,
    start_cli,
    tiny_spec,
    wait_for,
)
from s3_helpers import S3Server

from orchestrator.tune.internals import latest_checkpoint_name
from results.tables.snapshot import read_snapshot

pytestmark = [pytest.mark.s3, pytest.mark.timeout(1200)]

ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}
# Epochs of a few hundredths of a second, reported in batches of 0.5 s (the default
# report_batch_s): a trial runs for a few snapshots, with a checkpoint after its first report.
EPOCHS = 40


def _rows(fs, path: str, keys: tuple[str, ...]) -> list[dict]:
    """A Parquet table's rows (on any pyarrow filesystem) without volatile columns, sorted."""
    table = pq.read_table(path, filesystem=fs)
    table = table.drop_columns([c for c in table.column_names if c in VOLATILE])
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data_dir, s3_server: S3Server):
    """The reference study on local disk, and the same spec in a bucket: killed partway while
    its live report is already in the bucket, then resumed from the URI."""
    tmp = tmp_path_factory.mktemp("s3study")
    spec = tiny_spec(
        tmp / "s.yaml",
        "exact",
        data_dir,
        tmp / "local",
        train={"epochs": EPOCHS},
        checkpoint_frequency=2,
        report_every=2,
    )
    reference = run_cli(["run", str(spec), "--name", "reference"], cli_env(**ENV))
    assert reference.returncode == 0, reference.stderr[-3000:]

    bucket = s3_server.bucket("study")
    storage = f"s3://{bucket}/studies"
    env = cli_env(**ENV, **s3_server.env())
    fs = s3_server.fs()
    exp = f"{bucket}/studies/exact/tune/trials"
    report = f"{bucket}/studies/exact/report.html"
    live = {}

    def progressed() -> bool:
        try:
            snapshot = read_snapshot(fs, exp)
        except Exception:  # a snapshot being written right now: look again
            return False
        if snapshot is None:
            return False
        if "report" not in live and fs.get_file_info(report).size:
            with fs.open_input_stream(report) as f:
                live["report"] = f.readall().decode()
        # 3 epochs reported (one report to Tune may carry several: report_batch_s)
        started = [t for t in snapshot.trials if t.last_result.get("epoch", -1) >= 2]
        unfinished = [t for t in snapshot.trials if t.status not in ("ok", "diverged")]
        # an unfinished trial with a checkpoint in the bucket, for the resume to continue from
        checkpointed = any(latest_checkpoint_name(t.metadata) for t in unfinished)
        return "report" in live and bool(started) and checkpointed

    log = tmp / "run.log"
    proc = start_cli(["run", str(spec), "--storage", storage], env, log)
    wait_for(progressed, proc, timeout=600, log=log)
    assert kill_session(proc) >= 3

    resumed = run_cli(["resume", f"{storage}/exact"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "local": tmp / "local" / "reference",
        "uri": f"{storage}/exact",
        "storage": storage,
        "bucket": bucket,
        "resumed": resumed,
        "live_report": live["report"],
        "env": env,
        "fs": fs,
        "tmp": tmp,
    }


def test_killed_bucket_study_resumes_to_the_local_numbers(studies):
    fs, uri = studies["fs"], studies["uri"]
    assert studies["resumed"].stdout.splitlines()[-1] == uri
    base, local = uri.removeprefix("s3://"), studies["local"]
    epochs = _rows(fs, f"{base}/epochs.parquet", ("trial_key", "epoch"))
    assert len(epochs) == 6 * EPOCHS
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == len(epochs)
    for table, keys in (("epochs", ("trial_key", "epoch")), ("events", ("trial_key", "epoch"))):
        local_rows = _rows(None, str(local / f"{table}.parquet"), keys)
        assert local_rows and _rows(fs, f"{base}/{table}.parquet", keys) == local_rows, table
    trials = _rows(fs, f"{base}/trials.parquet", ("trial_key",))
    assert len(trials) == 6 and {t["status"] for t in trials} == {"ok"}
    assert trials == _rows(None, str(local / "trials.parquet"), ("trial_key",))
    final = read_snapshot(fs, f"{base}/tune/trials").trials
    assert any(  # some trial continued from a checkpoint in the bucket
        t.last_result["iterations_since_restore"] < t.last_result["training_iteration"]
        for t in final
    )


def test_live_report_was_refreshed_in_the_bucket(studies):
    assert "<title>running:" in studies["live_report"]
    with studies["fs"].open_input_stream(f"{studies['uri'][5:]}/report.html") as f:
        final = f.readall().decode()
    assert "<title>running:" not in final and 'class="running"' not in final


def test_status_ls_aggregate_and_report_on_the_uri(studies):
    env, uri = studies["env"], studies["uri"]
    status = run_cli(["status", uri], env)
    assert status.returncode == 0, status.stderr
    assert "6 ok" in status.stdout
    listing = run_cli(["ls", studies["storage"]], env)
    assert listing.returncode == 0, listing.stderr
    assert "exact" in listing.stdout
    aggregate = run_cli(["aggregate", uri], env)
    assert aggregate.returncode == 0, aggregate.stderr
    assert "wrote trials (6)" in aggregate.stdout
    out = studies["tmp"] / "copy.html"
    report = run_cli(["report", uri, "-o", str(out)], env)
    assert report.returncode == 0, report.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "exact" in out.read_text()


def test_optuna_search_in_the_bucket_has_its_optuna_db(tmp_path, data_dir, s3_server):
    spec = tiny_spec(
        tmp_path / "o.yaml",
        "optuna",
        data_dir,
        tmp_path / "unused",
        train={"epochs": 3},
        seeds=1,
        pruning={"target": {"choice": ["random", "largest"]}},
        search={"algorithm": "optuna", "num_samples": 3, "metric": "test_acc", "mode": "max"},
    )
    bucket = s3_server.bucket("optuna")
    env = cli_env(**ENV, **s3_server.env())
    run = run_cli(["run", str(spec), "--storage", f"s3://{bucket}"], env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "optuna: 3/3 finished" in run.stdout
    db = tmp_path / "optuna.db"
    s3_server.client().download_file(bucket, "optuna/optuna.db", str(db))
    with sqlite3.connect(db) as con:
        names = [r[0] for r in con.execute("SELECT study_name FROM studies")]
        done = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    assert names == ["optuna"] and done == 3
