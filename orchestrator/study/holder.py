"""Who drives a study: the holder a lock names, the held-lock interface, the refusal message.

Shared by the two lock mechanisms of :mod:`orchestrator.study.lock` (flock) and
:mod:`orchestrator.study.lease` (object stores); :func:`driver_of` asks, without taking anything, who
drives a study now (for ``status``, ``ls``, the dry run and the early refusal of a second driver).
"""

from __future__ import annotations

import abc
import fcntl
import json
import os
import posixpath
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Literal

import pyarrow.fs as pafs

from results.tables.storage import LEASE_FILE, LOCK_FILE
from trainables.errors import UserError

# A lease whose heartbeat is this old (seconds) is stale: its driver died or hung.
LEASE_EXPIRE_S = 120.0


@dataclass(frozen=True)
class Holder:
    """Who drives a study. ``token`` and ``heartbeat`` (epoch seconds) are set in lease mode."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601, seconds
    command: str
    token: str = ""
    heartbeat: float = 0.0
    # This machine's boot and pid namespace (:func:`pid_space`): where ``pid`` means a process.
    machine: str = ""

    def describe(self) -> str:
        """``pid 123 on host h, since 2026-01-02T03:04:05+00:00, running 'prunetune run x'``."""
        return f"pid {self.pid} on host {self.host}, since {self.started}, running {self.command!r}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        """The holder a lock file names; None for empty or unreadable content."""
        try:
            data = json.loads(text)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                started=str(data["started"]),
                command=str(data["command"]),
                token=str(data.get("token", "")),
                heartbeat=float(data.get("heartbeat", 0.0)),
                machine=str(data.get("machine", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def current_holder(command: str | None = None) -> Holder:
    """This process as a holder (``command`` defaults to this process's argv, on one line)."""
    if command is None:
        argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv else ["python"]
        command = shlex.join(argv)
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(command.split()),
        machine=pid_space(),
    )


def pid_space() -> str:
    """``<boot id>/<pid namespace>`` of this process: two processes see the same pids exactly when
    these agree (a reboot or another container changes one). "" where /proc does not tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def holder_dead(holder: Holder) -> bool:
    """Whether the lease's driver is known dead: it ran in this machine's pid namespace (same
    boot) and its pid is gone. A driver elsewhere is never known dead: its lease must expire."""
    if not holder.machine or holder.machine != pid_space():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class StudyLock(abc.ABC):
    """A held study lock: a context manager; :meth:`release` is idempotent.

    ``holder`` is this driver; ``took_over`` the holder of a stale lease this lock replaced
    (lease mode; None otherwise); ``lost`` says why the lock was lost while held (lease mode:
    another driver's token replaced ours, or the lease vanished), else None.
    """

    mode: Literal["flock", "lease"]

    def __init__(self, study_uri: str, holder: Holder) -> None:
        self.study_uri = study_uri
        self.holder = holder
        self.took_over: Holder | None = None
        self.lost: str | None = None

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up; a second call does nothing."""

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_driver(holder: Holder, expire_s: float = LEASE_EXPIRE_S) -> str:
    """:meth:`Holder.describe`; for a lease also its heartbeat's age and when it expires, so a
    refused user knows how long to wait when that driver died with its node (a lost head)."""
    if not holder.token:
        return holder.describe()
    age = max(0.0, time.time() - holder.heartbeat)
    left = max(0.0, expire_s - age)
    return (
        f"{holder.describe()}, last heartbeat {age:.0f} s ago; if that driver is gone (its "
        f"node lost), its lease expires in {left:.0f} s, {expire_s:.0f} s after its last "
        "heartbeat: retry then"
    )


def refusal(study_uri: str, who: str) -> UserError:
    return UserError(
        f"study {study_uri} is driven by another prunetune process ({who}); wait for it or stop it"
    )


def read_holder_fd(fd: int) -> Holder | None:
    """The holder named in the lock file; it writes right after locking, so retry briefly."""
    for _ in range(10):
        holder = Holder.from_json(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
        if holder is not None:
            return holder
        time.sleep(0.02)
    return None


# --- who drives a study (read-only) ---------------------------------------------------------------


def driver_of(
    fs: pafs.FileSystem, study_path: str, expire_s: float = LEASE_EXPIRE_S
) -> Holder | None:
    """The driver holding the study's lock now, or None; reads only, takes nothing.

    Local: a shared non-blocking ``flock`` probe on ``.driver.lock`` (refused while a driver holds
    it exclusively). Elsewhere: a lease whose heartbeat is younger than ``expire_s``, unless its
    driver ran on this machine and is gone (:func:`holder_dead`).
    """
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            fd = os.open(os.path.join(study_path, LOCK_FILE), os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder_fd(fd)
            return holder or Holder(host="?", pid=0, started="?", command="?")
        finally:
            os.close(fd)  # also drops our shared probe lock
        return None
    try:
        lease = read_lease(fs, study_path)
    except OSError:
        return None
    if lease is None or not lease_fresh(lease, expire_s) or holder_dead(lease):
        return None
    return lease


# --- the lease file (object stores) ---------------------------------------------------------------


def read_lease(fs: pafs.FileSystem, study_path: str) -> Holder | None:
    """The holder the study's lease file names; None when there is no lease file or its content
    is unreadable. Other storage errors (OSError) propagate."""
    try:
        with fs.open_input_stream(posixpath.join(study_path, LEASE_FILE)) as f:
            return Holder.from_json(f.readall().decode("utf-8", "replace"))
    except FileNotFoundError:
        return None


def lease_fresh(lease: Holder, expire_s: float = LEASE_EXPIRE_S) -> bool:
    """Whether the lease's last heartbeat is younger than `expire_s` seconds (by this machine's
    clock: the writer's and the reader's clocks must agree)."""
    return time.time() - lease.heartbeat < expire_s
