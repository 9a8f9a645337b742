"""Faults injected through the real command line: SIGTERM, a failing trial, a corrupt checkpoint,
a full disk (a real one: a small tmpfs, so these need root). Each ends the way the README's
"When things go wrong" says."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from orch_helpers import (
    cli_env,
    kill_session,
    progressed,
    run_cli,
    stable_rows,
    start_cli,
    tiny_spec,
    wait_for,
)

from orchestrator.tune.good_state import read_good_snapshot
from orchestrator.tune.internals import latest_checkpoint_name
from results.tables.snapshot import read_snapshot
from search_spaces.expand import expand
from search_spaces.spec import load_spec
from trainables.identity import trial_config, trial_key

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_sigterm_saves_the_state_prints_the_resume_line_and_exits_143(tmp_path):
    storage = tmp_path / "studies"
    spec = tiny_spec(tmp_path / "s.yaml", "term", tmp_path / "data", storage, train={"epochs": 12})
    study, log = storage / "term", tmp_path / "run.log"
    proc = start_cli(["run", str(spec)], cli_env(**ENV), log)
    wait_for(progressed(study / "tune" / "trials", 2), proc, timeout=600, log=log)

    os.kill(proc.pid, signal.SIGTERM)  # the driver only, as `kill PID` and `timeout` do
    code = proc.wait(timeout=120)
    left = kill_session(proc)  # nothing of its Ray may outlive it

    out = log.read_text()
    assert code == 143, out[-3000:]
    assert left == 0, out[-3000:]
    assert f"prunetune resume {study}" in out
    assert "SIGTERM received" not in out and "***" not in out, out[-3000:]
    others = [x for x in _lines(out) if not x.startswith(("prunetune: ", "[trials] "))]
    assert others == [], out  # progress lines, the notes, the resume line: no dumps
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(study / "tune" / "trials"))
    assert snapshot is not None and any(t.status != "ok" for t in snapshot.trials)
    resumed = run_cli(["resume", str(study)], cli_env(**ENV))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trials: 6/6 finished: 6 ok" in resumed.stdout


def test_a_failed_trial_is_one_line_naming_the_key_the_error_and_the_file(tmp_path):
    storage, faults = tmp_path / "studies", tmp_path / "faults"
    spec = tiny_spec(tmp_path / "s.yaml", "fail", tmp_path / "data", storage, retries=0)
    faults.mkdir()
    key = _first_trial_key(spec, storage)
    (faults / f"{key}.epoch1").touch()  # that trial's worker dies after epoch 1: for good

    done = run_cli(["run", str(spec)], cli_env(**ENV, PRUNETUNE_FAULT_DIR=str(faults)))

    # 1 (failed for good); 130 when Tune's last snapshot missed the failure (a race in Ray 2.60:
    # a trial whose actor died first keeps its RUNNING state in the snapshot; resume retries it)
    assert done.returncode in (1, 130), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    failed = [line for line in _lines(done.stderr) if key in line]
    assert len(failed) == 1, done.stderr
    assert "failed" in failed[0] and "ActorDiedError" in failed[0], failed[0]
    error_file = Path(failed[0].rsplit(" ", 1)[1])
    assert error_file.is_file() and "died" in error_file.read_text()


def _first_trial_key(spec: Path, storage: Path) -> str:
    return trial_key(expand(load_spec(str(spec))).trials[0])


@pytest.mark.parametrize("damage", ["empty", "random"])
def test_a_corrupt_checkpoint_is_set_aside_and_the_trial_resumes_to_the_same_numbers(
    damage, tmp_path
):
    storage, data = tmp_path / "studies", tmp_path / "data"
    # 40 epochs of a few hundredths of a second, reported in batches of 0.5 s: a trial runs for
    # a few snapshots, with a checkpoint after its first report.
    spec = tiny_spec(tmp_path / "s.yaml", "ckpt", data, storage, train={"epochs": 40})
    reference = run_cli(["run", str(spec), "--name", "reference"], cli_env(**ENV))
    assert reference.returncode == 0, reference.stderr[-3000:]

    study, log = storage / "damaged", tmp_path / "run.log"
    exp = study / "tune" / "trials"
    proc = start_cli(["run", str(spec), "--name", "damaged"], cli_env(**ENV), log)
    wait_for(progressed(exp, 3, checkpointed=True), proc, timeout=600, log=log)
    kill_session(proc)
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(exp))
    victim = next(
        t for t in snapshot.trials if t.status != "ok" and latest_checkpoint_name(t.metadata)
    )
    state = exp / victim.logdir / latest_checkpoint_name(victim.metadata) / "state.pt"
    size = state.stat().st_size
    state.write_bytes(b"" if damage == "empty" else os.urandom(size))
    key = trial_key(trial_config(victim.config))

    resumed = run_cli(["resume", str(study)], cli_env(**ENV))

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = [line for line in _lines(resumed.stderr) if str(state) in line]
    assert len(said) == 1 and key in said[0] and "epoch" in said[0], resumed.stderr
    assert "weights_only" not in resumed.stderr and "Traceback" not in resumed.stderr
    assert "set aside" in said[0] and "resuming from" in said[0], said[0]
    ref = storage / "reference"
    for table, keys in (("epochs", ("trial_key", "epoch")), ("trials", ("trial_key",))):
        # Tune's report counter (volatile) alone runs ahead of the epoch for that trial.
        rows, expected = (
            stable_rows(p, keys) for p in (study / f"{table}.parquet", ref / f"{table}.parquet")
        )
        assert rows == expected, table


def _mounted_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(mount, capture_output=True).returncode == 0


def _fill(path: Path, leave: int = 0) -> None:
    """Write zeros to `path` until the filesystem is full (a lasting fill), then give back
    `leave` bytes."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    while True:  # the last partial megabyte too
        try:
            with open(path, "ab") as f:
                f.write(b"\0" * 4096)
        except OSError:
            break
    os.truncate(path, os.path.getsize(path) - leave)


def test_a_full_disk_stops_the_driver_in_one_line_and_resume_keeps_finished_trials(tmp_path):
    disk = tmp_path / "disk"
    if not _mounted_tmpfs(disk, "40m"):
        pytest.skip("needs a tmpfs mount (root)")
    try:
        storage = disk / "studies"
        spec = tiny_spec(
            tmp_path / "s.yaml", "full", tmp_path / "data", storage, train={"epochs": 60}
        )  # long enough that the fill lands while trials still run, on a fast machine too
        study, log = storage / "full", tmp_path / "run.log"
        exp = study / "tune" / "trials"
        proc = start_cli(["run", str(spec)], cli_env(**ENV), log)
        wait_for(_one_finished(exp), proc, timeout=600, log=log)
        finished = {  # finished as the last good run state (a second behind Tune) says
            t.logdir: (exp / t.logdir / "result.json").read_bytes()
            for t in read_good_snapshot(pafs.LocalFileSystem(), str(exp)).trials
            if t.status == "ok"
        }
        started = time.monotonic()
        _fill(disk / "filler")

        code = proc.wait(timeout=600)
        stopped_after = time.monotonic() - started
        kill_session(proc)

        out = log.read_text()
        assert code == 75, out[-5000:]
        assert stopped_after < 120, out[-3000:]  # not a burn through the remaining trials
        assert "Traceback" not in out, out[-5000:]
        said = [line for line in _lines(out) if "disk is full" in line]
        assert len(said) == 1 and said[0].count("MB free") == 1, out[-3000:]
        assert said[0].count("the disk is full") == 1, said[0]
        assert said[0].endswith(f"prunetune resume {study}"), said[0]
        assert "failed for good" not in out and "retried from" not in out, out[-3000:]

        (disk / "filler").unlink()
        resume_log = tmp_path / "resume.log"
        resuming = start_cli(["resume", str(study)], cli_env(**ENV), resume_log)
        try:  # not Tune's 600 s wait for a trial that the restored state lost
            code = resuming.wait(timeout=300)
        except subprocess.TimeoutExpired:
            code = None
        kill_session(resuming)
        out = resume_log.read_text()

        assert code == 0, out[-3000:]
        assert "trials: 6/6 finished: 6 ok" in out, out[-3000:]
        assert "epochs (360)" in out, out[-3000:]  # 6 trials x 60 epochs: no epoch lost
        for logdir, results in finished.items():  # kept, and not run again
            assert (exp / logdir / "result.json").read_bytes() == results, logdir
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("leave_kb", [0, 64])  # 0: taking the lock fails; 64: the export does
def test_a_full_disk_after_the_last_trial_is_one_line_and_resume_exports(leave_kb, tmp_path):
    disk = tmp_path / "disk"
    if not _mounted_tmpfs(disk, "40m"):
        pytest.skip("needs a tmpfs mount (root)")
    try:
        storage = disk / "studies"
        spec = tiny_spec(tmp_path / "s.yaml", "done", tmp_path / "data", storage)
        study = storage / "done"
        first = run_cli(["run", str(spec)], cli_env(**ENV))
        assert first.returncode == 0, first.stderr[-3000:]
        trials = (study / "trials.parquet").read_bytes()
        _fill(disk / "filler", leave=leave_kb * 1024)

        full = run_cli(["resume", str(study)], cli_env(**ENV))

        assert full.returncode == 75, full.stderr[-3000:]
        assert "Traceback" not in full.stderr, full.stderr[-5000:]
        said = [line for line in _lines(full.stderr) if "prunetune: error:" in line]
        assert len(said) == 1 and said[0].count("the disk is full") == 1, full.stderr[-3000:]
        assert said[0].count("MB free there") == 1, said[0]
        assert said[0].endswith(f"prunetune resume {study}"), said[0]
        half_written = [p.name for p in study.iterdir() if p.name.startswith(".")]
        assert half_written == [".driver.lock"], half_written

        (disk / "filler").unlink()
        again = run_cli(["resume", str(study)], cli_env(**ENV))
        assert again.returncode == 0, again.stderr[-3000:]
        assert "trials: 6/6 finished: 6 ok" in again.stdout, again.stdout
        assert (study / "trials.parquet").read_bytes() == trials  # the same export, not a rerun
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _one_finished(exp: Path):
    def check() -> bool:
        try:
            snapshot = read_good_snapshot(pafs.LocalFileSystem(), str(exp))
        except Exception:
            return False
        statuses = [t.status for t in snapshot.trials] if snapshot else []
        return "ok" in statuses and any(s != "ok" for s in statuses)

    return check
