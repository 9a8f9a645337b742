"""A study's jobs on a cluster: their ids and following one.

A study's submission id is ``prunetune-<name>-<spec hash[:12]>`` (:func:`submission_id`); a
resubmission after a failed or stopped job gets ``<base>-r<k>``. :func:`follow` streams a job's
logs and says in one line when the cluster goes away (exit :data:`CLUSTER_LOST_EXIT`). The record
a study directory keeps of its job is in :mod:`orchestrator.cluster.submission`.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.cluster import connect

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
        return connect.reason_of(exc)
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


def say(text: str) -> None:
    """A note for the user: one line on stderr, at once."""
    print(text, file=sys.stderr, flush=True)
