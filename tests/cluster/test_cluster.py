"""A real two-node Ray cluster on this machine, token auth on (see conftest.py), driven through
`prunetune submit`: refusals without or with a wrong token, the shared-storage check, a complete
study end to end, and a study that loses its worker node midway and still finishes every trial
from its checkpoints, with nothing lost or duplicated.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from local_ray_cluster import REPO, run_cli

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def jobs(cluster) -> list[dict]:
    response = requests.get(
        f"{cluster.dashboard_url}/api/jobs/",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def run_job(cluster, entrypoint: str, timeout_s: float = 300) -> tuple[str, str]:
    """Run a shell entrypoint as a Ray job with the token; (final status, logs)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(
        cluster.dashboard_url, headers={"Authorization": f"Bearer {cluster.token}"}
    )
    sid = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + timeout_s
    while not client.get_job_status(sid).is_terminal():
        assert time.monotonic() < deadline, f"job {sid} did not end in {timeout_s} s"
        time.sleep(1)
    return str(client.get_job_status(sid)), client.get_job_logs(sid)


# --- auth -----------------------------------------------------------------------------------------


def test_submission_without_the_token_is_refused(ray_cluster, tmp_path) -> None:
    spec = tmp_path / "refused.yaml"
    spec.write_text("name: refused\n")
    args = ["submit", str(spec), "--address", ray_cluster.dashboard_url, "--storage", "/mnt/x"]
    before = len(jobs(ray_cluster))

    missing = run_cli(args, ray_cluster.env(with_token=False), timeout_s=120)
    (line,) = stderr_lines(missing)
    assert missing.returncode == 2
    assert "requires an auth token" in line and ray_cluster.dashboard_url in line

    wrong = {**ray_cluster.env(with_token=False), "RAY_AUTH_TOKEN": "not-the-token"}
    refused = run_cli(args, wrong, timeout_s=120)
    (line,) = stderr_lines(refused)
    assert refused.returncode == 2
    assert "refused the auth token from RAY_AUTH_TOKEN" in line

    # The token file in ~/.ray is found too (Ray's third place to look), and a wrong one refused.
    home = Path(ray_cluster.env(with_token=False)["HOME"])
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text("also-wrong\n")
    try:
        from_file = run_cli(args, ray_cluster.env(with_token=False), timeout_s=120)
    finally:
        (home / ".ray" / "auth_token").unlink()
    assert from_file.returncode == 2 and "auth_token" in stderr_lines(from_file)[0]

    assert len(jobs(ray_cluster)) == before, "a refused submission must not create a job"


# --- shared storage --------------------------------------------------------------------------------


def test_storage_check_refuses_a_path_only_the_head_sees(ray_cluster) -> None:
    if not ray_cluster.hides_node_local:
        pytest.skip("unshare --mount is not permitted here: no node-local directory to hide")
    shared = ray_cluster.root / "shared" / "check"
    local_only = ray_cluster.root / "node-local" / "check"
    code = (
        "import sys, ray\n"
        "from orchestrator.cluster.connect import check_storage_shared\n"
        "from trainables.errors import UserError\n"
        "ray.init(address='auto')\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        check_storage_shared(path)\n"
        "        print('ACCEPTED', path)\n"
        "    except UserError as exc:\n"
        "        print('REFUSED', path, '|', exc)\n"
    )
    command = shlex.join([sys.executable, "-c", code, str(shared), str(local_only)])
    status, logs = run_job(ray_cluster, f"cd {shlex.quote(str(REPO))} && {command}")
    assert status == "SUCCEEDED", logs
    assert f"ACCEPTED {shared}" in logs
    refused = [line for line in logs.splitlines() if line.startswith(f"REFUSED {local_only}")]
    assert len(refused) == 1, logs
    assert "is not shared by all 2 nodes" in refused[0] and "does not see the marker" in refused[0]
    assert not any(p.name.startswith(".prunetune-storage-check") for p in shared.iterdir())


# --- studies end to end ----------------------------------------------------------------------------

SMALL_STUDY = """\
name: {name}
dataset: {{name: mnist1d, num_samples: {num_samples}}}
model: {{name: mlp, width: {width}}}
train: {{epochs: {epochs}}}
pruning:
  method: schedule
  granularity: weight
  score: magnitude
  layers:
    - {{name: fc1, final_fraction: 0.5, start_epoch: 0, end_epoch: {last_event}}}
seeds: 1
"""  # one pruned trial and its matched unpruned baseline


def small_study(name: str, epochs: int, num_samples: int = 5000, width: int = 0) -> str:
    return SMALL_STUDY.format(
        name=name, epochs=epochs, last_event=epochs - 2, num_samples=num_samples, width=width
    )


def submit_env(cluster) -> dict[str, str]:
    return {**cluster.env(), "PYTHONPATH": str(REPO)}


def read_table(study: Path, name: str):
    return pq.read_table(study / f"{name}.parquet").to_pylist()


def assert_complete(study: Path, n_trials: int, epochs: int) -> list[dict]:
    """One row per trial, one per (trial, epoch) for every epoch, and the report."""
    trials = read_table(study, "trials")
    assert len(trials) == n_trials
    assert len({t["trial_key"] for t in trials}) == n_trials
    assert {t["status"] for t in trials} == {"ok"}
    assert {t["n_epochs"] for t in trials} == {epochs}
    rows = read_table(study, "epochs")
    keys = [(r["trial_key"], r["epoch"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated (trial, epoch) rows"
    assert sorted(keys) == sorted((t["trial_key"], e) for t in trials for e in range(epochs))
    report = (study / "report.html").read_text()
    assert "<html" in report.lower() and len(report) > 10_000
    return trials


def test_submitted_study_on_storage_a_node_cannot_see_is_refused(ray_cluster, tmp_path) -> None:
    """The driver (`prunetune run --address auto`) checks the storage before any trial starts."""
    if not ray_cluster.hides_node_local:
        pytest.skip("unshare --mount is not permitted here: no node-local directory to hide")
    storage = ray_cluster.root / "node-local" / "studies"
    storage.mkdir(parents=True, exist_ok=True)
    spec = tmp_path / "local.yaml"
    spec.write_text(small_study("local-only", epochs=3))
    result = run_cli(
        ["submit", str(spec), "--address", ray_cluster.dashboard_url, "--storage", str(storage),
         "--follow"],
        submit_env(ray_cluster),
        timeout_s=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:]  # the job FAILED
    errors = [line for line in result.stdout.splitlines() if line.startswith("prunetune: error:")]
    assert len(errors) == 1, result.stdout[-3000:]
    assert f"storage: '{storage / 'local-only'}' is not shared by all 2 nodes" in errors[0]
    assert not (storage / "local-only" / "tune").exists(), "no trial may start"

    # A failed study can be submitted again: a new job id with a suffix, the study id unchanged.
    sid = result.stdout.splitlines()[0]
    again = run_cli(result.args[3:], submit_env(ray_cluster), timeout_s=600)
    assert again.returncode == 1 and again.stdout.splitlines()[0] == f"{sid}-r2"


def test_submit_follow_runs_the_quickstart_to_completion(ray_cluster, tmp_path) -> None:
    """The product's main job, submitted to the cluster: 30 trials x 60 epochs (a few minutes)."""
    storage = ray_cluster.root / "shared" / "studies"
    storage.mkdir(parents=True, exist_ok=True)
    spec = "quickstart"
    result = run_cli(
        ["submit", spec, "--address", ray_cluster.dashboard_url, "--storage", str(storage),
         "--follow"],
        submit_env(ray_cluster),
        timeout_s=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    sid = result.stdout.splitlines()[0]
    assert sid.startswith("prunetune-quickstart-")
    study = storage / "quickstart"
    record = json.loads((study / "submission.json").read_text())
    assert record["submission_id"] == sid and record["address"] == ray_cluster.dashboard_url
    trials = assert_complete(study, n_trials=30, epochs=60)
    assert sum(t["is_baseline"] for t in trials) == 3

    # Submitting the same study again attaches to the finished job instead of starting another.
    again = run_cli(
        ["submit", spec, "--address", ray_cluster.dashboard_url, "--storage", str(storage)],
        submit_env(ray_cluster),
        timeout_s=300,
    )
    assert again.returncode == 0 and again.stdout.splitlines()[0] == sid
    assert "already has job" in again.stderr
    assert [j["submission_id"] for j in jobs(ray_cluster)].count(sid) == 1

    # `prunetune status` shows the job's state from the study's submission.json.
    status = run_cli(["status", str(study)], submit_env(ray_cluster), timeout_s=300)
    assert status.returncode == 0, status.stderr
    assert f"job {sid} at {ray_cluster.dashboard_url}: SUCCEEDED" in status.stdout, status.stdout


# --- losing a worker node midway -------------------------------------------------------------------


def trials_on_workers(cluster) -> list[str]:
    """Trial directory names of the Tune trials running on a worker node right now.

    Alive actors on a non-head node (the dashboard's state API) whose working directory is a Tune
    trial working directory (``.../working_dirs/<trial dir name>``, Tune's default chdir).
    """
    headers = {"Authorization": f"Bearer {cluster.token}"}

    def state(kind: str) -> list[dict]:
        url = f"{cluster.dashboard_url}/api/v0/{kind}"
        params = {"limit": 1000, "detail": "true"}
        response = requests.get(url, params=params, headers=headers, timeout=10)
        return response.json()["data"]["result"]["result"]

    workers = {
        n["node_id"] for n in state("nodes") if n["state"] == "ALIVE" and not n["is_head_node"]
    }
    names = []
    for actor in state("actors"):
        if actor["state"] != "ALIVE" or actor["node_id"] not in workers or not actor.get("pid"):
            continue
        try:
            cwd = os.readlink(f"/proc/{actor['pid']}/cwd")
        except OSError:
            continue
        if "/working_dirs/" in cwd:
            names.append(Path(cwd).name)
    return names


def last_checkpoint(study: Path, trial_dir_name: str) -> int:
    """Index of the trial's newest persisted checkpoint (-1: none yet)."""
    found = (study / "tune" / "trials" / trial_dir_name).glob("checkpoint_*")
    return max((int(p.name.split("_")[1]) for p in found), default=-1)


def test_trials_survive_losing_the_worker_node(ray_cluster, tmp_path) -> None:
    storage = ray_cluster.root / "shared" / "studies"
    storage.mkdir(parents=True, exist_ok=True)
    # Trials long enough (about 1 s per epoch here) that the second one starts on the worker
    # (its actor needs 15-30 s to import torch on a busy machine) while the first still runs.
    epochs = 60
    spec = tmp_path / "kill.yaml"
    spec.write_text(small_study("kill", epochs, num_samples=30000, width=512))
    command = [
        sys.executable, "-m", "orchestrator.cli.app", "submit", str(spec),
        "--address", ray_cluster.dashboard_url, "--storage", str(storage), "--follow",
    ]  # fmt: skip
    log = open(tmp_path / "submit.log", "w")
    follower = subprocess.Popen(
        command, env=submit_env(ray_cluster), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    study = storage / "kill"
    try:
        # Wait until a trial on the worker has persisted two checkpoints, then kill that node.
        deadline = time.monotonic() + 600
        victim = None
        while victim is None:
            assert follower.poll() is None, (tmp_path / "submit.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial reached two checkpoints on the worker"
            for name in trials_on_workers(ray_cluster):
                if 1 <= last_checkpoint(study, name) <= epochs - 3:
                    victim = name
            time.sleep(0.2)
        ray_cluster.kill_node("worker")
        code = follower.wait(timeout=900)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGTERM)
            follower.wait(timeout=30)
        log.close()
    output = (tmp_path / "submit.log").read_text()
    assert code == 0, output[-6000:]

    trials = assert_complete(study, n_trials=2, epochs=epochs)
    # The killed trial was restored from a checkpoint, not restarted: Tune's own history of it
    # shows a restore (iterations_since_restore restarts below training_iteration) and each
    # epoch exactly once.
    rows = [
        json.loads(line) for line in (study / "tune" / "trials" / victim / "result.json").open()
    ]
    assert [r["epoch"] for r in rows] == list(range(epochs)), [r["epoch"] for r in rows]
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)
    assert len(trials) == 2
