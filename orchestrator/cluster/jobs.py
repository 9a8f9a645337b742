"""A study's jobs on a cluster: their ids, following one, and the record a study directory keeps.

A study's submission id is ``prunetune-<name>-<spec hash[:12]>`` (:func:`submission_id`); a
resubmission after a failed or stopped job gets ``<base>-r<k>``. ``submission.json`` in the study
directory names the job, and :func:`job_status_line` reports its state for ``prunetune status``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import datetime, timezone
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


def follow(client: JobSubmissionClient, sid: str, poll_s: float = 1.0) -> int:
    """Stream the job's logs to stdout until it ends; 0 if it SUCCEEDED, 1 if FAILED/STOPPED."""
    try:
        asyncio.run(_stream_logs(client, sid))
    except RuntimeError as exc:  # the log socket dropped: the job may still be running
        say(f"note: log stream interrupted ({exc}); waiting for the job to end")
    while True:
        info = client.get_job_info(sid)
        status = str(info.status)
        if status in TERMINAL_EXIT:
            break
        time.sleep(poll_s)
    detail = f": {info.message}" if info.message and status != "SUCCEEDED" else ""
    say(f"job {sid} {status}{detail}")
    return TERMINAL_EXIT[status]


async def _stream_logs(client: JobSubmissionClient, sid: str) -> None:
    async for chunk in client.tail_job_logs(sid):
        sys.stdout.write(chunk)
        sys.stdout.flush()


# --- submission.json and `prunetune status` -------------------------------------------------------


def record_submission(
    storage: str, name: str, sid: str, address: str, spec_hash: str, overwrite: bool = True
) -> bool:
    """Write ``<storage>/<name>/submission.json`` if the storage root is reachable from here.

    Returns False (and writes nothing) when it is not, e.g. a cluster-only mount or a bucket
    this machine has no credentials for. With ``overwrite=False`` an existing record is kept.
    """
    import pyarrow.fs

    record = {
        "submission_id": sid,
        "address": address,
        "spec_hash": spec_hash,
        "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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


def job_status_line(study_dir: str | Path) -> str | None:
    """One line with the state of the job that runs this study, or None if it was not submitted.

    Reads ``<study_dir>/submission.json`` (a local path or a URI) and asks the cluster's Jobs
    API; never raises: an unreachable cluster or a refused token gives "state unknown (...)".
    """
    try:
        fs, root = resolve(str(study_dir))
        with fs.open_input_stream(f"{root}/{SUBMISSION_FILE}") as stream:
            record = json.loads(stream.read())
        sid, address = record["submission_id"], record["address"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return None
    try:
        info = cluster.connect(address).get_job_info(sid)
    except UserError as exc:
        return f"job {sid} at {address}: state unknown ({exc})"
    except Exception as exc:  # e.g. the cluster was replaced and forgot the job
        return f"job {sid} at {address}: state unknown ({type(exc).__name__}: {exc})"
    message = f" ({info.message})" if info.message else ""
    return f"job {sid} at {address}: {info.status}{message}"


def say(text: str) -> None:
    """A note for the user: one line on stderr, at once."""
    print(text, file=sys.stderr, flush=True)
