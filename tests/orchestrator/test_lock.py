"""The study lock: a second driver is refused at once, naming the first; a killed driver's lock
frees (flock at once, a lease after it expires); a heartbeat keeps a held lease fresh.

The holder runs in a separate process, as a second `prunetune run` would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from orch_helpers import cli_env

from orchestrator.study.holder import driver_of, pid_space
from orchestrator.study.lock import LEASE_FILE, LOCK_FILE, acquire
from trainables.errors import UserError

FS = pafs.LocalFileSystem()
# Short lease timings (seconds) so that expiry takes about a second.
FAST = {"heartbeat_s": 0.1, "expire_s": 0.8, "settle_s": 0.05}
# The contender's timings while the holder lives: the reader's expire_s decides freshness, and a
# minute keeps the holder's lease fresh even if a loaded machine starves its heartbeat thread.
PATIENT = {**FAST, "expire_s": 60.0}
# "At once": a refusal that waited for the holder (it sleeps 60 s) or for its lease to expire
# (60 s under PATIENT) would take a minute; the bound leaves room for a loaded machine.
AT_ONCE_S = 10.0

_HOLDER = """
import sys, time, pyarrow.fs as pafs
from orchestrator.study.lock import acquire
lock = acquire(pafs.LocalFileSystem(), sys.argv[1], sys.argv[1], mode=sys.argv[2],
               heartbeat_s=0.1, expire_s=0.8, settle_s=0.05, command="prunetune run held")
print("held", flush=True)
time.sleep(60)
"""


def _start_holder(study: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(study), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _beat_now(study: Path, proc: subprocess.Popen, machine: str | None = None) -> None:
    """Stamp the killed holder's lease (left in place by its death) with a heartbeat of now, as
    if it died right after a beat, so that a freshness check does not race the kill's duration;
    with `machine`, as if it had run on that machine (another boot or pid namespace)."""
    path = study / LEASE_FILE
    lease = json.loads(path.read_text())
    assert lease["pid"] == proc.pid and lease["machine"] == pid_space()
    stamp = {"heartbeat": time.time()} | ({} if machine is None else {"machine": machine})
    path.write_text(json.dumps({**lease, **stamp}))


def _assert_refused_by(
    study: Path, proc: subprocess.Popen, mode: str, timings: dict[str, float] = PATIENT
) -> str:
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        acquire(FS, str(study), str(study), mode=mode, **timings)
    message = str(err.value)
    assert time.monotonic() - t0 < AT_ONCE_S  # at once: no waiting for the holder
    assert "\n" not in message
    assert message.startswith(f"study {study} is driven by another prunetune process (")
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message
    assert "'prunetune run held'" in message
    assert message.endswith("wait for it or stop it")
    return message


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return tmp_path / "studies" / "s"  # absent: acquire creates it


def test_flock_refuses_second_driver_until_holder_is_killed(study: Path) -> None:
    proc = _start_holder(study, "flock")
    try:
        _assert_refused_by(study, proc, "flock")
        named = json.loads((study / LOCK_FILE).read_text())
        assert (named["pid"], named["command"]) == (proc.pid, "prunetune run held")
    finally:
        _kill(proc)
    with acquire(FS, str(study), str(study)) as lock:  # the kernel freed the dead holder's lock
        assert lock.mode == "flock"
        assert json.loads((study / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_lease_refuses_second_driver_until_dead_holder_expires(study: Path) -> None:
    proc = _start_holder(study, "lease")
    try:
        _assert_refused_by(study, proc, "lease")
    finally:
        _kill(proc)
    _beat_now(study, proc, machine="another-boot/pid:[1]")  # a driver lost with its machine
    message = _assert_refused_by(study, proc, "lease", FAST)  # its last heartbeat is still fresh
    assert "its lease expires in 1 s, 1 s after its last heartbeat: retry then" in message
    time.sleep(FAST["expire_s"])
    lock = acquire(FS, str(study), str(study), mode="lease", **FAST)
    try:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
        lease = json.loads((study / LEASE_FILE).read_text())
        assert (lease["pid"], lease["token"]) == (os.getpid(), lock.holder.token)
    finally:
        lock.release()
    assert not (study / LEASE_FILE).exists()


def test_lease_of_a_killed_driver_on_this_machine_is_taken_over_at_once(study: Path) -> None:
    proc = _start_holder(study, "lease")
    _kill(proc)
    _beat_now(study, proc)  # fresh, but its pid is gone from this machine's pid namespace
    assert driver_of(FS, str(study)) is None
    lock = acquire(FS, str(study), str(study), mode="lease", **PATIENT)
    try:
        assert lock.took_over is not None and lock.took_over.pid == proc.pid
    finally:
        lock.release()


@pytest.mark.parametrize("mode", ["flock", "lease"])
def test_release_then_reacquire(study: Path, mode: str) -> None:
    first = acquire(FS, str(study), str(study), mode=mode, **FAST)
    with pytest.raises(UserError, match=f"pid {os.getpid()} on host"):
        acquire(FS, str(study), str(study), mode=mode, **FAST)
    first.release()
    first.release()  # idempotent
    with acquire(FS, str(study), str(study), mode=mode, **FAST) as second:
        assert second.mode == mode and second.took_over is None
    with acquire(FS, str(study), str(study), mode=mode, **FAST):
        pass


def test_heartbeat_keeps_a_long_held_lease_fresh(study: Path) -> None:
    lock = acquire(FS, str(study), str(study), mode="lease", **FAST)
    try:
        first_beat = json.loads((study / LEASE_FILE).read_text())["heartbeat"]
        time.sleep(2.5 * FAST["expire_s"])
        with pytest.raises(UserError, match="is driven by another prunetune process"):
            acquire(FS, str(study), str(study), mode="lease", **FAST)
        lease = json.loads((study / LEASE_FILE).read_text())
        assert lease["token"] == lock.holder.token
        assert lease["heartbeat"] > first_beat + FAST["expire_s"]
        assert lock.lost is None
    finally:
        lock.release()


def test_a_lease_taken_by_another_driver_is_lost_and_left_alone(study: Path) -> None:
    lock = acquire(FS, str(study), str(study), mode="lease", **FAST)
    path = study / LEASE_FILE
    other = {**json.loads(path.read_text()), "pid": 1, "token": "other", "heartbeat": time.time()}
    path.write_text(json.dumps(other))
    deadline = time.monotonic() + 30.0  # a beat comes within heartbeat_s; room for load
    while lock.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    lock.release()
    assert lock.lost is not None and "pid 1 on host" in lock.lost
    assert json.loads(path.read_text())["token"] == "other"  # release never deletes theirs


def test_a_contender_whose_write_lands_during_the_settle_wait_wins(study: Path) -> None:
    path = study / LEASE_FILE

    def contender() -> None:  # writes right after our lease appears, as a racing driver would
        while not path.exists():
            time.sleep(0.005)
        other = {**json.loads(path.read_text()), "pid": 1, "token": "other"}
        path.write_text(json.dumps({**other, "heartbeat": time.time()}))

    thread = threading.Thread(target=contender)
    thread.start()
    with pytest.raises(UserError, match="pid 1 on host"):
        acquire(FS, str(study), str(study), mode="lease", **{**FAST, "settle_s": 1.0})
    thread.join()
    assert json.loads(path.read_text())["token"] == "other"


def test_auto_mode_uses_a_lease_off_the_local_filesystem(tmp_path: Path) -> None:
    fs = pafs.SubTreeFileSystem(str(tmp_path), FS)  # not a LocalFileSystem: no flock possible
    with acquire(fs, "s", "mock://bucket/s", **FAST) as lock:
        assert lock.mode == "lease"
        assert (tmp_path / "s" / LEASE_FILE).exists()
        with pytest.raises(UserError, match="^study mock://bucket/s is driven by"):
            acquire(fs, "s", "mock://bucket/s", **FAST)


def test_a_study_another_driver_is_creating_names_the_driver(study: Path) -> None:
    """Two drivers started together: the second sees the first one's spec.yaml before its
    study.json. The refusal names the driver, not 'not a prunetune study'."""
    from orchestrator.study.directory import locate
    from search_spaces.spec import spec_from_dict

    spec = spec_from_dict({"name": study.name, "storage": str(study.parent)})
    with acquire(FS, str(study), str(study), mode="flock", **FAST):
        (study / "spec.yaml").write_text(spec.to_yaml())  # created up to its study.json
        with pytest.raises(UserError, match="is driven by another prunetune process"):
            locate(spec)
    with pytest.raises(UserError, match="exists and is not a prunetune study"):
        locate(spec)  # no driver: a directory someone else's files are in
