"""The record a submitted study keeps of its job (``submission.json``), and what `status` makes of it.

``submission.json`` in the study directory names the job, the dashboard it was submitted to, and
the ``prunetune submit`` command that resumes the study on a cluster. :func:`job_report` asks the
cluster about the job; :func:`with_job` decides what `status` says when the job's cluster went
away with its driver (a lost head): the study is ``interrupted``, and that command resumes it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.cluster import connect
from results.tables.storage import SPEC_FILE, SUBMISSION_FILE, resolve
from trainables.errors import UserError


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

    def lines(self, with_resume: bool) -> list[str]:
        """:meth:`line`, and with `with_resume` ``resume it [once a head is up at URL again]:
        COMMAND``."""
        if not with_resume:
            return [self.line()]
        when = f" once a head is up at {self.address} again" if self.state in GONE else ""
        return [self.line(), f"resume it{when}: {self.resume}"]


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
        info = connect.connect(address).get_job_info(sid)
    except connect.Unreachable as exc:
        return JobReport(sid, address, "unreachable", exc.reason, resume)
    except UserError as exc:  # a missing or refused token
        return JobReport(sid, address, "unknown", str(exc), resume)
    except OSError as exc:  # the dashboard went away between the two requests
        return JobReport(sid, address, "unreachable", connect.reason_of(exc), resume)
    except Exception as exc:  # the Jobs API's RuntimeError: no such job, or a server error
        if "does not exist" in str(exc):
            return JobReport(sid, address, "forgotten", "", resume)
        return JobReport(sid, address, "unknown", f"{type(exc).__name__}: {exc}", resume)
    return JobReport(sid, address, str(info.status), info.message or "", resume)


def _stored_spec_resume(study_dir: str, address: str) -> str:
    """``prunetune submit`` of the study's stored spec.yaml (it holds the name and storage)."""
    spec = f"{study_dir.rstrip('/')}/{SPEC_FILE}"
    return shlex.join(["prunetune", "submit", spec, "--address", address, "--follow"])


def with_job(state: str, job: JobReport | None) -> dict[str, str | None]:
    """What `status` says of a study in `state` given its job: ``state``, ``job`` (its line) and
    ``resume``, the command that resumes it, or None when none is needed. An incomplete study no
    driver holds, whose job ended or was lost, needs one; it is ``interrupted`` when the job's
    cluster went away (or a new head forgot the job)."""
    if job is None or job.active or state not in ("incomplete", "not started"):
        return {"state": state, "job": job and job.line(), "resume": None}
    if job.state in GONE and state == "incomplete":
        state = "interrupted"
    return {"state": state, "job": job.line(), "resume": job.resume}
