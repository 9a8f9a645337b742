"""One driver per study: a lock that a `run` or `resume` driver holds for its whole lifetime.

Two drivers of one study directory would both restore and write the Ray Tune experiment inside
it and corrupt it. :func:`acquire` takes the study's lock or refuses at once, naming the holder.

Two mechanisms, chosen by the filesystem (``mode="auto"``) or forced by ``mode``:

- **flock** (a local path; also NFS, where Linux maps ``flock`` onto byte-range locks the server
  arbitrates; filesystems that keep locks per machine do not protect across machines): an
  exclusive, non-blocking ``fcntl.flock`` on ``<study>/.driver.lock``, held on an open file
  descriptor for the lock's lifetime. The file's content is JSON naming the holder, for the
  refusal message only; the kernel's lock decides. The kernel drops the lock when its process
  dies, however it dies, so a stale lock never blocks. The descriptor is not inherited across
  ``exec`` (Python opens files close-on-exec), so Ray's worker processes never hold it.
- **lease** (any other pyarrow filesystem: s3://, gs://, ...): the JSON object
  ``<study>/driver-lease.json`` names the holder with a random token and a heartbeat time
  (seconds since the epoch) that a daemon thread rewrites every ``heartbeat_s``. A lease whose
  heartbeat is older than ``expire_s`` is stale (its driver died or hung) and may be taken over.
  Acquiring reads the lease; a fresh lease with another token is refused; else it writes its own,
  waits ``settle_s`` and reads back, and holds the lease only if its token is still there.

  Object stores have no atomic create through pyarrow, so the lease is best effort: two drivers
  that both read "no lease" and whose writes land more than ``settle_s`` apart both read back
  their own token, the later write wins the object, and the earlier driver learns at its next
  heartbeat (within ``heartbeat_s``) that it lost the lease: it then stops heartbeating and sets
  :attr:`StudyLock.lost`, which its caller must check and act on. Freshness compares the writer's
  clock with the reader's, so the machines' clocks must agree to well within
  ``expire_s - heartbeat_s``. A driver that stalls (suspended, partitioned) longer than
  ``expire_s`` may be taken over while it still believes it drives; it learns so at its next beat.
"""

from __future__ import annotations

import abc
import fcntl
import json
import os
import posixpath
import secrets
import shlex
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Literal

import pyarrow.fs as pafs

from results.storage import LEASE_FILE, LOCK_FILE
from trainables.errors import UserError

# The files a lock leaves in a study directory (a flock file stays after release, empty).
LOCK_FILES = frozenset({LOCK_FILE, LEASE_FILE})
Mode = Literal["auto", "flock", "lease"]


@dataclass(frozen=True)
class Holder:
    """Who drives a study. ``token`` and ``heartbeat`` (epoch seconds) are set in lease mode."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601, seconds
    command: str
    token: str = ""
    heartbeat: float = 0.0

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
    )


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


def acquire(
    fs: pafs.FileSystem,
    study_path: str,
    study_uri: str,
    *,
    heartbeat_s: float = 30.0,
    expire_s: float = 120.0,
    settle_s: float = 2.0,
    mode: Mode = "auto",
    command: str | None = None,
) -> StudyLock:
    """Take the lock of the study at `study_path` on `fs`, creating the directory if needed.

    `study_uri` names the study in messages. ``mode="auto"`` uses flock on a
    ``pyarrow.fs.LocalFileSystem`` and a lease elsewhere; the lease timings (seconds) apply in
    lease mode only. Raises UserError (one line, naming the holder) when another driver holds it.
    """
    if heartbeat_s <= 0 or expire_s <= heartbeat_s or settle_s < 0:
        raise ValueError(
            f"lock timings: need 0 < heartbeat_s < expire_s and settle_s >= 0, got "
            f"heartbeat_s={heartbeat_s}, expire_s={expire_s}, settle_s={settle_s}"
        )
    if mode == "auto":
        mode = "flock" if isinstance(fs, pafs.LocalFileSystem) else "lease"
    holder = current_holder(command)
    if mode == "flock":
        if not isinstance(fs, pafs.LocalFileSystem):
            raise ValueError(f"flock needs a LocalFileSystem, got {type(fs).__name__}")
        return _FlockLock.take(study_path, study_uri, holder)
    lock = _LeaseLock(fs, study_path, study_uri, holder, heartbeat_s, expire_s)
    lock.take(settle_s)
    return lock


def refusal(study_uri: str, who: str) -> UserError:
    return UserError(
        f"study {study_uri} is driven by another prunetune process ({who}); wait for it or stop it"
    )


# --- flock ----------------------------------------------------------------------------------------


class _FlockLock(StudyLock):
    mode = "flock"

    def __init__(self, study_uri: str, holder: Holder, fd: int) -> None:
        super().__init__(study_uri, holder)
        self._fd: int | None = fd

    @classmethod
    def take(cls, study_path: str, study_uri: str, holder: Holder) -> _FlockLock:
        os.makedirs(study_path, exist_ok=True)
        # No O_TRUNC: the file may name the current holder, which a refusal reports.
        fd = os.open(os.path.join(study_path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder_fd(fd)
            os.close(fd)
            who = other.describe() if other else "holder not recorded yet"
            raise refusal(study_uri, who) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.to_json().encode(), 0)
        os.fsync(fd)
        return cls(study_uri, holder, fd)

    def release(self) -> None:
        """Empty the file (it names nobody now) and close it, which drops the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _read_holder_fd(fd: int) -> Holder | None:
    """The holder named in the lock file; it writes right after locking, so retry briefly."""
    for _ in range(10):
        holder = Holder.from_json(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
        if holder is not None:
            return holder
        time.sleep(0.02)
    return None


# --- lease ----------------------------------------------------------------------------------------


class _LeaseLock(StudyLock):
    mode = "lease"

    def __init__(
        self,
        fs: pafs.FileSystem,
        study_path: str,
        study_uri: str,
        holder: Holder,
        heartbeat_s: float,
        expire_s: float,
    ) -> None:
        super().__init__(study_uri, holder)
        self.holder = Holder(**{**asdict(holder), "token": secrets.token_hex(16)})
        self._fs = fs
        self._path = posixpath.join(study_path, LEASE_FILE)
        self._study_path = study_path
        self._heartbeat_s = heartbeat_s
        self._expire_s = expire_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, settle_s: float) -> None:
        """Write our lease unless a fresh one of another driver exists; start the heartbeat."""
        current = self._read()
        if current is not None and self._fresh(current):
            raise refusal(self.study_uri, self._describe(current))
        self._fs.create_dir(self._study_path, recursive=True)
        self._write()
        time.sleep(settle_s)  # lets a contender's concurrent write land before we read back
        after = self._read()
        if after is None or after.token != self.holder.token:
            who = self._describe(after) if after else "its lease vanished while we took ours"
            raise refusal(self.study_uri, who)
        self.took_over = current
        self._thread = threading.Thread(
            target=self._beat_loop, name=f"prunetune-lease-{self.holder.pid}", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat; delete the lease if it is still ours (never another driver's)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self.lost is None:
            current = self._read()
            if current is not None and current.token == self.holder.token:
                self._fs.delete_file(self._path)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                current = self._read()
                if current is None or current.token != self.holder.token:
                    who = self._describe(current) if current else "the lease file vanished"
                    self.lost = f"lost the lease of study {self.study_uri} ({who})"
                    print(f"prunetune: {self.lost}; stop this driver", file=sys.stderr)
                    return
                self._write()
            except OSError:
                # A transient storage error: retry at the next beat. Failing for longer than
                # expire_s lets another driver take over, which the next read then detects.
                continue

    def _write(self) -> None:
        self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
        data = self.holder.to_json().encode()
        if isinstance(self._fs, pafs.LocalFileSystem):
            # A local write is visible half-done; a reader must see the old lease or the new.
            tmp = f"{self._path}.{self.holder.token}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path)
            return
        with self._fs.open_output_stream(self._path) as sink:  # one PUT: atomic on object stores
            sink.write(data)

    def _read(self) -> Holder | None:
        try:
            with self._fs.open_input_stream(self._path) as f:
                return Holder.from_json(f.readall().decode("utf-8", "replace"))
        except FileNotFoundError:
            return None

    def _fresh(self, other: Holder) -> bool:
        return time.time() - other.heartbeat < self._expire_s

    def _describe(self, other: Holder) -> str:
        age = max(0.0, time.time() - other.heartbeat)
        return (
            f"{other.describe()}, last heartbeat {age:.0f} s ago; "
            f"its lease expires {self._expire_s:.0f} s after its last heartbeat"
        )


# --- who drives a study (read-only) ---------------------------------------------------------------


def driver_of(fs: pafs.FileSystem, study_path: str, expire_s: float = 120.0) -> Holder | None:
    """The driver holding the study's lock now, or None; reads only, takes nothing.

    Local: a shared non-blocking ``flock`` probe on ``.driver.lock`` (refused while a driver holds
    it exclusively). Elsewhere: a lease whose heartbeat is younger than ``expire_s``.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            fd = os.open(os.path.join(study_path, LOCK_FILE), os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder_fd(fd)
            return holder or Holder(host="?", pid=0, started="?", command="?")
        finally:
            os.close(fd)  # also drops our shared probe lock
        return None
    try:
        with fs.open_input_stream(posixpath.join(study_path, LEASE_FILE)) as f:
            lease = Holder.from_json(f.readall().decode("utf-8", "replace"))
    except (FileNotFoundError, OSError):
        return None
    if lease is None or time.time() - lease.heartbeat >= expire_s:
        return None
    return lease
