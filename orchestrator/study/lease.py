"""The study lock on object stores: a lease file with a heartbeat (:mod:`orchestrator.study.lock` has
the protocol and its limits)."""

from __future__ import annotations

import os
import posixpath
import secrets
import sys
import threading
import time
from dataclasses import asdict

import pyarrow.fs as pafs

from orchestrator.study.holder import (
    Holder,
    StudyLock,
    describe_driver,
    holder_dead,
    lease_fresh,
    read_lease,
    refusal,
)
from results.tables.storage import LEASE_FILE


class LeaseLock(StudyLock):
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
        if (
            current is not None
            and lease_fresh(current, self._expire_s)
            and not holder_dead(current)
        ):
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
        return read_lease(self._fs, self._study_path)

    def _describe(self, other: Holder) -> str:
        return describe_driver(other, self._expire_s)
