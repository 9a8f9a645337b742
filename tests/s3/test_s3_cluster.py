"""A two-node Ray cluster whose study lives only in an S3 bucket loses first a worker node, then its
head node; through the real command line, against the real S3 API on 127.0.0.1.

The nodes (tests/cluster/local_ray_cluster.py) get the bucket's settings (``AWS_ENDPOINT_URL`` and
the credential variables) in the environment of ``ray start``, as a MinIO user sets them where the
nodes start. The head has no CPU, so every trial runs on the worker:

1. ``prunetune submit`` starts the study on the bucket.
2. While a trial is mid-run on the worker, the worker node is SIGKILLed and a new one joins: the
   driver keeps going and that trial continues from its last checkpoint in the bucket.
3. Once the restored trial has trained on, the head node is SIGKILLed (the driver runs there and
   dies with it) and the remaining worker with it.
4. A fresh head and worker start, and the same ``submit`` (``--follow``) finishes the study: the
   README's recovery steps after losing the head node.

Every table in the bucket must equal the same spec's run on local disk, with no (trial, epoch)
row twice. Every process started here is stopped at the end, also on failure.

All nodes share this machine, so the re-submitted driver sees that the dead driver's pid is gone
and takes its lease over at once (:func:`orchestrator.study.holder.holder_dead`); a new head on
another machine waits for the lease to expire, which this test does not cover.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from orch_helpers import REPO, VOLATILE, cli_env, run_cli, tiny_spec
from s3_helpers import S3Server

from results.tables.snapshot import read_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))  # local_ray_cluster

from local_ray_cluster import LocalCluster, pids_naming, pids_of_node  # noqa: E402

pytestmark = [pytest.mark.s3, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]

EPOCHS = 16
N_TRIALS = 3  # seeds 1: two pruned targets and their unpruned baseline
# The driver snapshots Tune's experiment every second (so the test sees progress in the bucket);
# one thread per trial, as in the reference run.
ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}


def _rows(fs, path: str, keys: tuple[str, ...]) -> list[dict]:
    """A Parquet table's rows (on any pyarrow filesystem) without volatile columns, sorted."""
    table = pq.read_table(path, filesystem=fs)
    table = table.drop_columns([c for c in table.column_names if c in VOLATILE])
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


class Clusters:
    """The clusters of one test: each a head (no CPU) and a worker (1 CPU) with the bucket's
    settings; :meth:`stop` ends them all and any driver of the bucket's study left behind."""

    def __init__(self, s3_env: dict[str, str], bucket: str) -> None:
        self.s3_env = s3_env
        self.bucket = bucket
        self.started: list[LocalCluster] = []

    def start(self) -> tuple[LocalCluster, str]:
        """A new cluster and its worker's node name. `ray start` gives a node 30 s to register,
        which a busy machine can exceed: a node that gave up is started again (3 tries)."""
        for attempt in range(3):
            root = Path(tempfile.mkdtemp(prefix="pts3c-"))  # short: Ray's socket paths below it
            cluster = LocalCluster(root, head_cpus=0, extra_env={**ENV, **self.s3_env})
            self.started.append(cluster)
            try:
                cluster.start_head(timeout_s=300)
            except RuntimeError:
                if attempt == 2:
                    raise
                cluster.stop()
                continue
            return cluster, self.add_worker(cluster, "w1")
        raise AssertionError("unreachable")

    @staticmethod
    def add_worker(cluster: LocalCluster, name: str) -> str:
        """Start a worker node (1 CPU) that joins `cluster`; its node name."""
        for attempt in range(3):
            try:
                cluster.add_worker(f"{name}-{attempt}", timeout_s=300)
                return f"{name}-{attempt}"
            except RuntimeError:
                cluster.kill_node(f"{name}-{attempt}")
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def drivers(self) -> list[int]:
        """Live processes naming the bucket: the job's driver (`prunetune run ... --job`)."""
        return pids_naming(f"s3://{self.bucket}/")

    def stop(self) -> list[int]:
        """Stop every node and driver; the pids that survived (none expected)."""
        for cluster in self.started:
            cluster.stop()
        for pid in self.drivers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)
        leftover = [p for c in self.started for p in pids_of_node(c.root)] + self.drivers()
        for cluster in self.started:
            shutil.rmtree(cluster.root, ignore_errors=True)
        return leftover


def wait_for_nodes(cluster: LocalCluster, count: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while cluster.alive_node_count() != count:
        assert time.monotonic() < deadline, f"the cluster did not get to {count} alive nodes"
        time.sleep(1)


def test_bucket_study_survives_losing_a_worker_then_the_head(
    tmp_path, data_dir, s3_server: S3Server
) -> None:
    spec = tiny_spec(
        tmp_path / "lost.yaml",
        "lost",
        data_dir,
        tmp_path / "local",
        seeds=1,
        train={"epochs": EPOCHS},
        dataset={"num_samples": 3000},
    )
    reference = run_cli(["run", str(spec), "--name", "reference"], cli_env(**ENV))
    assert reference.returncode == 0, reference.stderr[-3000:]

    bucket = s3_server.bucket("cluster")
    storage = f"s3://{bucket}/studies"
    fs = s3_server.fs()
    exp = f"{bucket}/studies/lost/tune/trials"
    clusters = Clusters(s3_server.env(), bucket)

    def submit(cluster: LocalCluster, *extra: str):
        env = {**cluster.env(), **ENV, **s3_server.env(), "PYTHONPATH": str(REPO)}
        args = ["submit", str(spec), "--address", cluster.dashboard_url, "--storage", storage]
        return run_cli([*args, *extra], env)

    def wait_until(condition, what: str, timeout_s: float = 600):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                snapshot = read_snapshot(fs, exp)
            except Exception:  # a snapshot being written right now: look again
                snapshot = None
            if snapshot is not None and (found := condition(snapshot.trials)):
                return found
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def mid_run(trials) -> list:
        """Unfinished trials with a checkpoint in the bucket and epochs still to train."""
        return [
            t
            for t in trials
            if t.tune_status == "RUNNING"
            and 2 <= t.last_result.get("epoch", -1) + 1 <= EPOCHS - 4  # epochs reported
        ]

    def restored(trials) -> list:
        """Trials that continued from a checkpoint after a restart."""
        found = []
        for t in trials:
            since, total = (
                t.last_result.get(k, 0) for k in ("iterations_since_restore", "training_iteration")
            )
            if 1 <= since < total:
                found.append(t)
        return found

    try:
        cluster, worker = clusters.start()
        first = submit(cluster)
        assert first.returncode == 0, first.stderr[-3000:]

        # 1. A worker node is lost while a trial runs on it; a new worker joins.
        (victim,) = wait_until(mid_run, "a trial mid-run on the worker")[:1]
        cluster.kill_node(worker)
        wait_for_nodes(cluster, 1)  # the head sees the worker gone, then a new one joins
        worker = clusters.add_worker(cluster, "w2")

        # 2. That trial goes on from its checkpoint; then the head node is lost, with the driver.
        def restored_mid_study(trials) -> list:
            unfinished = [t for t in trials if t.tune_status != "TERMINATED"]
            return restored(trials) if unfinished and mid_run(trials) else []

        wait_until(restored_mid_study, "a restored trial, with another trial mid-run")
        cluster.kill_node("head")
        cluster.kill_node(worker)
        deadline = time.monotonic() + 60  # the job's watcher kills its driver within seconds
        while clusters.drivers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not clusters.drivers(), "the driver outlived its head node"
        before = read_snapshot(fs, exp).trials
        assert [t for t in before if t.tune_status != "TERMINATED"], "the study had ended"

        # 3. A fresh head and worker; the same submit finishes the study.
        cluster, _ = clusters.start()
        final = submit(cluster, "--follow")
        assert final.returncode == 0, final.stderr[-3000:] + final.stdout[-6000:]
        # The new cluster knows no job of the old one: a new job under the study's id.
        assert final.stdout.splitlines()[0] == first.stdout.splitlines()[0]
    finally:
        leftover = clusters.stop()
    assert not leftover, f"processes of the test clusters survived: {leftover}"

    base, local = f"{bucket}/studies/lost", tmp_path / "local" / "reference"
    epochs = _rows(fs, f"{base}/epochs.parquet", ("trial_key", "epoch"))
    assert len(epochs) == N_TRIALS * EPOCHS
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == len(epochs)
    for table, keys in (
        ("epochs", ("trial_key", "epoch")),
        ("events", ("trial_key", "epoch")),
        ("trials", ("trial_key",)),
    ):
        local_rows = _rows(None, str(local / f"{table}.parquet"), keys)
        assert local_rows and _rows(fs, f"{base}/{table}.parquet", keys) == local_rows, table
    final_trials = read_snapshot(fs, exp).trials
    assert {t.status for t in final_trials} == {"ok"}
    assert victim.trial_id in {t.trial_id for t in restored(final_trials)}
