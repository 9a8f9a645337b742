"""Object-store faults, through the real command line against a real S3 API on 127.0.0.1:
bad credentials and a missing bucket refused before Ray starts, a killed driver's fresh lease
explained with the time until it expires, two drivers started together, and the endpoint lost
partway through a study and back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
from orch_helpers import REPO, cli_env, run_cli, start_cli, tiny_spec, wait_for
from s3_helpers import Relay, S3Server

from orchestrator.study.holder import LEASE_EXPIRE_S, Holder
from orchestrator.study.lock import acquire
from results.tables.snapshot import read_snapshot
from results.tables.storage import LEASE_FILE, TABLES, table_file
from trainables.errors import UserError

pytestmark = [pytest.mark.s3, pytest.mark.timeout(1200)]

ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}


def _spec(tmp_path, data_dir, name="s", **overrides):
    return tiny_spec(tmp_path / f"{name}.yaml", name, data_dir, tmp_path / "unused", **overrides)


def _refused(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a refusal (exit 2, nothing else printed)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prunetune: error: ")
    return lines[0]


def test_bad_credentials_are_refused_in_one_line(tmp_path, data_dir, s3_server: S3Server):
    bucket = s3_server.bucket("creds")
    env = cli_env(**s3_server.env(AWS_ACCESS_KEY_ID="AKIANOTAKEY"))
    spec = _spec(tmp_path, data_dir)
    for args in (
        ["run", str(spec), "--storage", f"s3://{bucket}/studies"],
        ["resume", f"s3://{bucket}/studies/s"],
        ["status", f"s3://{bucket}/studies/s"],
        ["ls", f"s3://{bucket}/studies"],
    ):
        line = _refused(run_cli(args, env, timeout=120))
        assert f"s3://{bucket}/studies" in line and "cannot reach the storage" in line, line
        assert "ACCESS_DENIED" in line or "InvalidAccessKeyId" in line, line
    assert s3_server.keys(bucket) == []  # nothing written, no Ray started to write it


def test_keys_from_a_credentials_file_as_docker_compose_gives_them(tmp_path, s3_server):
    """docker/docker-compose.yml hands the nodes their keys as AWS_SHARED_CREDENTIALS_FILE."""
    bucket = s3_server.bucket("file")
    creds = tmp_path / "s3_credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    env = cli_env(**s3_server.env())
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(var)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    listing = run_cli(["ls", f"s3://{bucket}/studies"], env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    creds.write_text("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = x\n")
    assert "cannot reach the storage" in _refused(run_cli(["ls", f"s3://{bucket}/x"], env, 120))


def test_missing_bucket_is_refused_in_one_line(tmp_path, data_dir, s3_server: S3Server):
    env = cli_env(**s3_server.env())
    spec = _spec(tmp_path, data_dir)
    line = _refused(run_cli(["run", str(spec), "--storage", "s3://no-such-bucket/x"], env, 120))
    assert line.endswith("bucket 'no-such-bucket' does not exist; create it first"), line
    line = _refused(run_cli(["resume", "s3://no-such-bucket/x/s"], env, 120))
    assert "bucket 'no-such-bucket' does not exist" in line, line


def test_a_dead_drivers_fresh_lease_says_when_it_expires(tmp_path, data_dir, s3_server):
    """A head node lost with its driver leaves a lease that stays fresh for up to 120 s: the next
    `run` names that driver and says how long until its lease expires."""
    bucket = s3_server.bucket("lease")
    age = 30.0
    dead = Holder("lost-head", 4242, "2026-01-01T00:00:00+00:00", "prunetune run s", "t0k3n",
                  time.time() - age)  # fmt: skip
    with s3_server.fs().open_output_stream(f"{bucket}/studies/s/{LEASE_FILE}") as f:
        f.write(dead.to_json().encode())
    result = run_cli(
        ["run", str(_spec(tmp_path, data_dir)), "--storage", f"s3://{bucket}/studies"],
        cli_env(**s3_server.env()),
        timeout=120,
    )
    line = _refused(result)
    assert "pid 4242 on host lost-head" in line, line
    seen = float(re.search(r"last heartbeat (\d+) s ago", line).group(1))
    left = float(re.search(r"its lease expires in (\d+) s", line).group(1))
    assert seen >= age and abs(seen + left - LEASE_EXPIRE_S) <= 1, line


def test_lease_race_on_s3_one_driver_wins_each_time(s3_server: S3Server):
    """Several drivers take one study's lease at the same moment, five times over, on the real
    S3 API: exactly one holds it each time, the others are refused naming it."""
    bucket = s3_server.bucket("race")
    fs = s3_server.fs()
    for round_ in range(5):
        path = f"{bucket}/studies/r{round_}"
        start = threading.Barrier(3)
        held, refused = [], []

        def contend(path=path, start=start, held=held, refused=refused) -> None:
            start.wait()
            try:
                held.append(acquire(fs, path, f"s3://{path}", settle_s=1.0, heartbeat_s=5.0))
            except UserError as exc:
                refused.append(str(exc))

        threads = [threading.Thread(target=contend) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert len(held) == 1 and len(refused) == 2, (held, refused)
            assert all("driven by another prunetune process" in r for r in refused)
            lease = json.loads(fs.open_input_stream(f"{path}/{LEASE_FILE}").readall())
            assert lease["token"] == held[0].holder.token
        finally:
            for lock in held:
                lock.release()


def test_two_cli_drivers_started_together_one_runs(tmp_path, data_dir, s3_server):
    bucket = s3_server.bucket("two")
    spec = _spec(tmp_path, data_dir, train={"epochs": 3}, seeds=1)
    env = cli_env(**ENV, **s3_server.env())
    args = ["run", str(spec), "--storage", f"s3://{bucket}/studies"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.app", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [(r[0], r[2][-1500:]) for r in results]
    loser = next(r for r in results if r[0] == 2)
    assert "is driven by another prunetune process" in loser[2].strip().splitlines()[-1]
    winner = next(r for r in results if r[0] == 0)
    assert winner[1].splitlines()[-1] == f"s3://{bucket}/studies/s"


def test_endpoint_lost_partway_then_resume_loses_and_duplicates_nothing(
    tmp_path, data_dir, s3_server: S3Server
):
    """The S3 endpoint disappears (connections refused) for a while partway through a study and
    comes back. The driver ends with a documented exit code (0: it waited and went on; 1: some
    trials failed for good) and a last line naming the study; `resume` then finishes it with
    every epoch once and readable Parquet tables."""
    bucket = s3_server.bucket("fault")
    relay = Relay(s3_server.port)
    relay.restore()
    spec = _spec(tmp_path, data_dir, train={"epochs": 6}, checkpoint_frequency=2)
    storage = f"s3://{bucket}/studies"
    fs, exp = s3_server.fs(), f"{bucket}/studies/s/tune/trials"

    def progressed() -> bool:
        try:
            snapshot = read_snapshot(fs, exp)
        except Exception:
            return False
        return snapshot is not None and any(
            t.last_result.get("training_iteration", 0) >= 1 for t in snapshot.trials
        )

    log = tmp_path / "run.log"
    proc = start_cli(
        ["run", str(spec), "--storage", storage],
        cli_env(**ENV, **s3_server.env(relay.endpoint)),
        log,
    )
    try:
        wait_for(progressed, proc, timeout=600, log=log)
        relay.drop()
        time.sleep(20)
        relay.restore()
        code = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        relay.drop()
    out = log.read_text()
    assert code in (0, 1), out[-3000:]
    print(f"endpoint lost for 20 s: exit {code}; the driver's last lines:\n{out[-1500:]}")
    resumed = run_cli(["resume", f"{storage}/s"], cli_env(**ENV, **s3_server.env()))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    base = f"{bucket}/studies/s"
    epochs = pq.read_table(f"{base}/epochs.parquet", filesystem=fs).to_pylist()
    assert sorted((r["trial_key"], r["epoch"]) for r in epochs) == sorted(
        {(r["trial_key"], r["epoch"]) for r in epochs}
    )
    assert len(epochs) == 6 * 6
    trials = pq.read_table(f"{base}/trials.parquet", filesystem=fs).to_pylist()
    assert len(trials) == 6 and {t["status"] for t in trials} == {"ok"}
    for table in TABLES:
        if s3_server.keys(bucket, f"studies/s/{table_file(table)}"):
            pq.read_table(f"{base}/{table_file(table)}", filesystem=fs)  # not corrupt
