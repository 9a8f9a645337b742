"""A lost head node, through the real command line: a study submitted with `--follow` to a one-node
cluster on this machine (token auth on) whose head is SIGKILLed midway, its driver dying with it.

The following client ends in one line that says the cluster went away and names the command that
resumes the study, exit 69, no traceback; `prunetune status` shows the study as interrupted with
the dashboard address the job was submitted to and the same command; once a new head is up on the
same ports, that very command finishes the study: every trial ok, every epoch once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from local_ray_cluster import REPO, LocalCluster, pids_naming, run_cli
from test_cluster import assert_complete, small_study, submit_env

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EPOCHS = 20  # about 1 s each here: the head dies while the first trial trains
RESUME_SAYS = "resume it with: "


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s: {what}"
        time.sleep(0.2)


def trials_with_two_checkpoints(study: Path) -> list[str]:
    return [p.parent.name for p in (study / "tune" / "trials").glob("*/checkpoint_000001")]


@pytest.fixture
def head_only():
    """A one-node cluster (the head, 1 CPU); stopped, and every process it left killed, at the end."""
    root = Path(tempfile.mkdtemp(prefix="ptl-"))  # short: Ray's socket paths live below it
    cluster = LocalCluster(root)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()
        for pid in pids_naming(str(root)):  # a driver the head's death left behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def test_a_lost_head_is_one_line_then_interrupted_then_resumed(head_only, tmp_path) -> None:
    cluster = head_only
    url = cluster.dashboard_url
    storage = cluster.root / "shared" / "studies"
    storage.mkdir(parents=True)
    study = storage / "lost"
    spec = tmp_path / "lost.yaml"
    spec.write_text(small_study("lost", EPOCHS, num_samples=30000, width=512))
    command = [sys.executable, "-m", "orchestrator.cli.app", "submit", str(spec),
               "--address", url, "--storage", str(storage), "--follow"]  # fmt: skip
    out, err = tmp_path / "submit.out", tmp_path / "submit.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        follower = subprocess.Popen(
            command, env=submit_env(cluster), cwd=REPO, stdout=stdout, stderr=stderr
        )
        try:
            wait_until(
                lambda: trials_with_two_checkpoints(study) or follower.poll() is not None,
                600,
                "a trial's second checkpoint",
            )
            assert follower.poll() is None, err.read_text()[-3000:] + out.read_text()[-3000:]
            cluster.kill_node("head")
            (victim,) = trials_with_two_checkpoints(study)
            code = follower.wait(timeout=120)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(timeout=30)

    # One line, a documented exit code, no traceback.
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert code == 69, "\n".join(lines[-20:])
    assert "Traceback" not in err.read_text()
    sid = out.read_text().splitlines()[0]
    after = lines[lines.index(f"submitted job {sid} to {url}") + 1 :]
    assert len(after) == 1, lines  # nothing else once the job was submitted
    assert lines[-1].startswith(
        f"prunetune: error: the cluster at {url} went away while job {sid} ran (connection "
        f"refused); the study's state is saved in {study}: "
    ), lines[-1]
    resume = lines[-1].split(RESUME_SAYS, 1)[1]
    assert shlex.split(resume) == [
        "prunetune", "submit", str(spec), "--address", url, "--storage", str(storage),
        "--name", "lost", "--follow",
    ]  # fmt: skip

    # The driver died with the head; `status` says the study was interrupted and how to resume.
    wait_until(lambda: not pids_naming(str(storage)), 120, "the driver to die with its head")
    status = run_cli(["status", str(study)], submit_env(cluster), timeout_s=300)
    assert status.returncode == 0, status.stderr
    shown = status.stdout.splitlines()
    assert shown[0].startswith(f"study {study} (spec ") and shown[0].endswith(": interrupted")
    assert f"job {sid} at {url}: the cluster does not answer (connection refused)" in shown
    assert shown[-1] == f"resume it once a head is up at {url} again: {resume}"
    assert "8265" not in status.stdout and "state unknown" not in status.stdout

    # A new head where the old one was; the printed command, as printed, finishes the study.
    cluster.start_head(same_ports=True)
    assert cluster.dashboard_url == url
    words = shlex.split(resume)
    again = run_cli(words[1:], submit_env(cluster), timeout_s=900)  # `prunetune` = the CLI
    assert again.returncode == 0, again.stderr[-4000:] + again.stdout[-4000:]
    assert again.stdout.splitlines()[0] == sid  # the same study id: a fresh head knew no job
    assert_complete(study, n_trials=2, epochs=EPOCHS)
    # The trial the head died under has each epoch once in Tune's own history of it too (from its
    # last checkpoint in the snapshot, or from the start when the snapshot named none yet).
    history = (study / "tune" / "trials" / victim / "result.json").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == list(range(EPOCHS)), history
