"""Helpers for the orchestrator tests: tiny specs, CLI subprocesses killed as a whole, tables."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.study.directory import Study, locate, open_for_run
from orchestrator.tune.internals import latest_checkpoint_name
from results.tables.snapshot import read_snapshot
from search_spaces.expand import expand
from search_spaces.spec import load_spec
from search_spaces.yaml_io import dump_yaml
from trainables.identity import trial_config, trial_key

REPO = Path(__file__).resolve().parents[2]

# Columns that legitimately differ between two runs of the same study: Tune's trial ids, wall
# times, hosts, how often a trial was retried, and Tune's report counter (`training_iteration`),
# which runs ahead of the epoch for a trial that restarted from an earlier checkpoint than the
# one Tune handed over, or from its first epoch (README, "A corrupt checkpoint").
VOLATILE = {
    "trial_id",
    "epoch_time_s",
    "flatness_time_s",
    "time_total_s",
    "runtime_s",
    "hostname",
    "node_ip",
    "num_failures",
    "tune_status",
    "error",
    "training_iteration",
}


def tiny_spec(path: Path, name: str, data_dir: Path, storage: Path, **overrides) -> Path:
    """A small MNIST-1D study: 2 targets x 2 seeds pruned + 2 baselines = 6 trials."""
    spec = {
        "name": name,
        "dataset": {"name": "mnist1d", "num_samples": 1000, "data_dir": str(data_dir)},
        "model": {"name": "cnn1d", "width": 8},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.003},
        "pruning": {
            "method": "schedule",
            "target": ["random", "largest"],
            "layers": [{"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2}],
        },
        "seeds": 2,
        "resources": {"cpu": 1},
        "max_concurrent_trials": 2,
        "storage": str(storage),
    }
    for key, value in overrides.items():  # a dict is merged into the section; None drops it
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(dump_yaml(spec))
    return path


def created_study(tmp_path: Path, name: str = "s") -> Study:
    """A created (not started) :func:`tiny_spec` study `name` under ``tmp_path / "st"``; its spec
    is ``study.spec``."""
    spec = load_spec(
        str(tiny_spec(tmp_path / f"{name}.yaml", name, tmp_path / "d", tmp_path / "st"))
    )
    return open_for_run(locate(spec), spec, expand(spec))


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m orchestrator.cli.app ARGS` in a fresh process; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The CLI in a new session (its own process group), so that it can be killed whole."""
    out = open(log, "w")  # noqa: SIM115 - closed by the caller's kill_session
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli.app", *args],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`: the driver and every Ray process it started
    (raylet, GCS, workers: they stay in the driver's session even in their own process groups)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            members.append(pid)
    return members


def kill_session(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGKILL every process of the CLI's session at once; wait until none is left.

    Returns how many processes were killed. Raises if any survives `timeout` seconds.
    """
    pids = session_members(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while (left := session_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        raise AssertionError(f"processes of the killed study survived: {left}")
    return len(pids)


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen, timeout: float, log: Path
) -> None:
    """Poll `condition` until true; fail if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the study ended before the kill point:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            kill_session(proc)
            raise AssertionError(
                f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


def progressed(
    exp: Path,
    min_epochs: int,
    min_trials: int = 1,
    unlisted: bool = False,
    checkpointed: bool = False,
):
    """True once the stored snapshot shows `min_trials` trials with `min_epochs` epochs reported
    and the experiment still unfinished; with `unlisted`, also a trial directory that the snapshot
    does not list yet (a trial created after it: an orphan-to-be for Optuna); with
    `checkpointed`, also an unfinished trial with a checkpoint that the snapshot registered (one
    that a resume restores from).

    Counted in epochs (the newest reported record's ``epoch`` + 1), not in Tune's reports: one
    report may carry several epochs (the spec's ``report_batch_s``), and a checkpoint goes with a
    report, so a few reports may hold every epoch of a short trial."""

    def check() -> bool:
        try:
            snapshot = read_snapshot(pafs.LocalFileSystem(), str(exp))
        except Exception:  # a snapshot being copied right now: look again
            return False
        if snapshot is None:
            return False
        started = [t for t in snapshot.trials if t.last_result.get("epoch", -1) + 1 >= min_epochs]
        unfinished = [t for t in snapshot.trials if t.status not in ("ok", "diverged")]
        if checkpointed and not any(latest_checkpoint_name(t.metadata) for t in unfinished):
            return False
        if unlisted:
            listed = {t.logdir for t in snapshot.trials}
            if not any(p.is_dir() and p.name not in listed for p in exp.iterdir()):
                return False
        return len(started) >= min_trials and bool(unfinished)

    return check


def stable_rows(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The table's rows without volatile columns, sorted by `keys`."""
    table = pq.read_table(path)
    table = table.drop_columns([c for c in table.column_names if c in VOLATILE])
    return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


def optuna_trial_keys(snapshot, exp: Path, num_samples: int, seeds: int) -> set[str]:
    """Check that every suggestion ran exactly once per seed and that no trial directory lies
    outside the snapshot; return the trials' keys."""
    assert len(snapshot.trials) == num_samples * seeds
    groups = collections.defaultdict(list)
    keys = set()
    for t in snapshot.trials:
        config = json.loads((exp / t.logdir / "params.json").read_text())
        groups[json.dumps(config["trial"], sort_keys=True)].append(config["__trial_index__"])
        keys.add(trial_key(trial_config(config)))
    for indices in groups.values():  # identical suggestions share a group: whole repeats each
        assert sorted(indices) == sorted(list(range(seeds)) * (len(indices) // seeds))
    assert {p.name for p in exp.iterdir() if p.is_dir()} == {t.logdir for t in snapshot.trials}
    return keys
