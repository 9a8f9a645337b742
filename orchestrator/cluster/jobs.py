"""A study's jobs on a cluster: their ids, following one, and the record a study directory keeps.

A study's submission id is ``prunetune-<name>-<spec hash[:12]>`` (:func:`submission_id`); a
resubmission after a failed or stopped job gets ``<base>-r<k>``. ``submission.json`` in the study
directory names the job and the command that resumes the study, and :func:`job_report` reports
the job's state for ``prunetune status``. :func:`follow` streams a job's logs and says in one line
when the cluster goes away (exit :data:`CLUSTER_LOST_EXIT`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cluster import connect as cluster
from results.tables.storage import SUBMISSION_FILE, resolve
from trainables.errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


def submission_id(name: str, spec_hash: str) -> str:
    """``prunetune-<name>-<spec hash[:12]>``, the name reduced to [A-Za-z0-9_.-]."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "study"
    return f"prunetune-{safe}-{spec_hash[:12]}"


def next_submission_id(base: str, taken: list[str]) -> str:
    """`base` if no job of the study exists yet, else ``<base>-r<k>`` after the highest k taken
    (the first job counts as k = 1): a resubmission after a failed or stopped job."""
    if not taken:
        return base
    numbers = [1 if t == base else int(t.rsplit("-r", 1)[1]) for t in taken]
    return f"{base}-r{max(numbers) + 1}"


def jobs_of_study(client: JobSubmissionClient, base: str) -> list:
    """The cluster's jobs of this study (ids `base` and `base-r<k>`), newest first."""
    pattern = re.compile(re.escape(base) + r"(-r\d+)?")
    jobs = [j for j in client.list_jobs() if j.submission_id and pattern.fullmatch(j.submission_id)]
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)


TERMINAL_EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}
# The exit code of a client that loses the cluster while it follows a job: sysexits' EX_UNAVAILABLE
# (a service it needs is gone; distinct from 75, the full disk, whose remedy differs).
CLUSTER_LOST_EXIT = 69
# How long the dashboard may fail to answer before the client counts the cluster as gone (a
# blip, a dashboard restart).
LOST_AFTER_S = 10.0


def follow(
    client: JobSubmissionClient,
    sid: str,
    lost: Callable[[str], str],
    poll_s: float = 1.0,
    lost_after_s: float = LOST_AFTER_S,
) -> int:
    """Stream the job's logs to stdout until it ends; 0 if it SUCCEEDED, 1 if FAILED/STOPPED.

    When the cluster stops answering (or answers but no longer knows the job: a new head) for
    `lost_after_s` seconds, print ``prunetune: error: `` and ``lost(reason)`` on one line and
    return :data:`CLUSTER_LOST_EXIT`.
    """
    import logging

    import aiohttp

    # The Jobs SDK logs each closed log socket at INFO on stderr; the outcome is said here, once.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    dropped = None
    try:
        asyncio.run(_stream_logs(client, sid))
    except (RuntimeError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
        dropped = exc  # the log socket dropped: the job may still run, or the cluster went away
    since = None
    while True:
        try:
            info = client.get_job_info(sid)
        except (OSError, RuntimeError) as exc:  # requests' errors are OSErrors
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= lost_after_s:
                say(f"prunetune: error: {lost(_lost_reason(exc))}")
                return CLUSTER_LOST_EXIT
            time.sleep(poll_s)
            continue
        since = None
        status = str(info.status)
        if status in TERMINAL_EXIT:
            break
        if dropped is not None:
            say(f"note: log stream interrupted ({dropped}); waiting for the job to end")
            dropped = None
        time.sleep(poll_s)
    detail = f": {info.message}" if info.message and status != "SUCCEEDED" else ""
    say(f"job {sid} {status}{detail}")
    return TERMINAL_EXIT[status]


def _lost_reason(exc: BaseException) -> str:
    """Why the Jobs API did not answer, in a few words."""
    if isinstance(exc, OSError):
        return cluster.reason_of(exc)
    if "does not exist" in str(exc):
        return "the cluster no longer knows the job: a new head?"
    return " ".join(str(exc).split())[:200]


def lost_line(address: str, sid: str, reason: str, study: str, resume: str) -> str:
    """What a client that lost the cluster says: what happened, where the state is, what to type."""
    return (
        f"the cluster at {address} went away while job {sid} ran ({reason}); the study's state "
        f"is saved in {study}: once a head is up there again, resume it with: {resume}"
    )


async def _stream_logs(client: JobSubmissionClient, sid: str) -> None:
    async for chunk in client.tail_job_logs(sid):
        sys.stdout.write(chunk)
        sys.stdout.flush()


# --- submission.json and `prunetune status` -------------------------------------------------------


def record_submission(
    storage: str,
    name: str,
    sid: str,
    address: str,
    spec_hash: str,
    resume: str,
    overwrite: bool = True,
) -> bool:
    """Write ``<storage>/<name>/submission.json`` if the storage root is reachable from here.

    It names the job, the dashboard it was submitted to, and `resume`: the ``prunetune submit``
    command that resumes the study on a cluster (what `status` prints once the cluster is gone).
    Returns False (and writes nothing) when the storage is not reachable, e.g. a cluster-only
    mount or a bucket this machine has no credentials for. With ``overwrite=False`` an existing
    record is kept.
    """
    import pyarrow.fs

    record = {
        "submission_id": sid,
        "address": address,
        "spec_hash": spec_hash,
        "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resume": resume,
    }
    try:
        fs, root = resolve(storage)
        if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
            return False
        target = f"{root}/{name}/{SUBMISSION_FILE}"
        if not overwrite and fs.get_file_info(target).type == pyarrow.fs.FileType.File:
            return True
        fs.create_dir(f"{root}/{name}", recursive=True)
        with fs.open_output_stream(target) as stream:
            stream.write((json.dumps(record, indent=2) + "\n").encode())
    except (OSError, UserError):
        return False
    return True


# What JobReport.state is when the Jobs API gave no status: the dashboard did not answer, or it
# answered without the job (a new head). Either way the study's driver is gone with that cluster
# unless a driver still holds the study's lock.
GONE = ("unreachable", "forgotten")


@dataclass(frozen=True)
class JobReport:
    """The job that runs a study, as `prunetune status` shows it."""

    sid: str
    address: str
    state: str  # the Jobs API's status (PENDING, RUNNING, SUCCEEDED, ...), one of GONE, "unknown"
    detail: str  # the job's message, or why the state is not known ("" when none)
    resume: str  # the command that resumes the study on a cluster

    @property
    def active(self) -> bool:
        """Whether the job may still run (or start): its state says so, or is not known."""
        return self.state in ("PENDING", "RUNNING", "unknown")

    def line(self) -> str:
        """``job ID at URL: STATE (detail)``."""
        words = {
            "unreachable": "the cluster does not answer",
            "forgotten": "the cluster does not know this job (a new head?)",
            "unknown": "state unknown",
        }
        detail = f" ({self.detail})" if self.detail else ""
        return f"job {self.sid} at {self.address}: {words.get(self.state, self.state)}{detail}"


def job_report(study_dir: str | Path) -> JobReport | None:
    """The job that runs this study, or None if it was not submitted (no ``submission.json``).

    Reads ``<study_dir>/submission.json`` (a local path or a URI) and asks the cluster's Jobs
    API; never raises. A record written before it named its resume command gets one rebuilt
    from the study's stored spec.
    """
    try:
        fs, root = resolve(str(study_dir))
        with fs.open_input_stream(f"{root}/{SUBMISSION_FILE}") as stream:
            record = json.loads(stream.read())
        sid, address = str(record["submission_id"]), str(record["address"])
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None
    resume = str(record.get("resume") or _stored_spec_resume(str(study_dir), address))
    try:
        info = cluster.connect(address).get_job_info(sid)
    except cluster.Unreachable as exc:
        return JobReport(sid, address, "unreachable", exc.reason, resume)
    except UserError as exc:  # a missing or refused token
        return JobReport(sid, address, "unknown", str(exc), resume)
    except OSError as exc:  # the dashboard went away between the two requests
        return JobReport(sid, address, "unreachable", cluster.reason_of(exc), resume)
    except Exception as exc:  # the Jobs API's RuntimeError: no such job, or a server error
        if "does not exist" in str(exc):
            return JobReport(sid, address, "forgotten", "", resume)
        return JobReport(sid, address, "unknown", f"{type(exc).__name__}: {exc}", resume)
    return JobReport(sid, address, str(info.status), info.message or "", resume)


def _stored_spec_resume(study_dir: str, address: str) -> str:
    """``prunetune submit`` of the study's stored spec.yaml (it holds the name and storage)."""
    from results.tables.storage import SPEC_FILE

    spec = f"{study_dir.rstrip('/')}/{SPEC_FILE}"
    return shlex.join(["prunetune", "submit", spec, "--address", address, "--follow"])


def say(text: str) -> None:
    """A note for the user: one line on stderr, at once."""
    print(text, file=sys.stderr, flush=True)
