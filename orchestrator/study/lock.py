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
  heartbeat is older than ``expire_s`` is stale (its driver died or hung) and may be taken over;
  so is a fresh lease whose driver ran on this machine (same boot, same pid namespace: the lease
  records them) and whose pid is gone, so that a killed driver never blocks a ``resume`` on its
  own machine. A driver on another machine (a lost head node) holds its lease until it expires.
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

import fcntl
import os
from typing import Literal

import pyarrow.fs as pafs

from orchestrator.study.holder import (
    LEASE_EXPIRE_S,
    Holder,
    StudyLock,
    current_holder,
    read_holder_fd,
    refusal,
)
from orchestrator.study.lease import LeaseLock
from results.tables.storage import (
    LEASE_FILE as LEASE_FILE,  # the tests name both files through here
)
from results.tables.storage import LOCK_FILE

Mode = Literal["auto", "flock", "lease"]


def acquire(
    fs: pafs.FileSystem,
    study_path: str,
    study_uri: str,
    *,
    heartbeat_s: float = 30.0,
    expire_s: float = LEASE_EXPIRE_S,
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
    lock = LeaseLock(fs, study_path, study_uri, holder, heartbeat_s, expire_s)
    lock.take(settle_s)
    return lock


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
        path = os.path.join(study_path, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = read_holder_fd(fd)
            os.close(fd)
            who = other.describe() if other else "holder not recorded yet"
            raise refusal(study_uri, who) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.to_json().encode(), 0)
            os.fsync(fd)
        except OSError as exc:  # a full disk, say: name the file, and drop the lock
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, path) from None
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
