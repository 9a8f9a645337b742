"""Who drives a study: the holder a lock names, the held-lock interface, the refusal message.

Shared by the two lock mechanisms of :mod:`orchestrator.lock` (flock) and
:mod:`orchestrator.lease` (object stores).
"""

from __future__ import annotations

import abc
import json
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Literal

from trainables.errors import UserError


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


def refusal(study_uri: str, who: str) -> UserError:
    return UserError(
        f"study {study_uri} is driven by another prunetune process ({who}); wait for it or stop it"
    )
