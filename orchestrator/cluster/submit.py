"""`prunetune submit`: run a study on a Ray cluster through the Jobs API (the driver runs there).

Flow: load and validate the spec here (a bad spec exits 2 and submits nothing); connect to the
dashboard with the auth token (`orchestrator.cluster.connect.connect`); derive the submission id from the
study id, ``prunetune-<name>-<spec hash[:12]>``; attach to a live or finished job of that study
instead of starting a second one; else submit ``prunetune run spec.yaml --storage S --name N
--address auto --job`` (``--job``: the driver leaves the job's working directory once it has read
the spec; ``orchestrator.cli.run.leave_job_dir``); print the job id; with ``--follow`` stream the
logs and exit with the job's status (or, when the cluster goes away meanwhile, one line with the
command that resumes the study, exit 69).

What travels: the job's runtime_env ``working_dir`` is a fresh staging directory holding the
resolved ``spec.yaml`` (exactly what was validated here) and, by default, prunetune's own
packages copied from this install (``orchestrator``, ``trainables``, ``search_spaces``,
``results``; sources only), so the cluster runs the client's code and computes the same spec hash.
``--working-dir DIR`` ships the packages of another checkout instead; ``--no-ship-code`` ships
only the spec and uses the prunetune installed in the cluster's image (docker/). Data, studies
and .git never travel.

A resubmission after the job failed or was stopped gets the id ``<base>-r<k>``; the driver finds
the study's directory and resumes it. When the storage is reachable from here, the study
directory records the job and the command that resumes the study in ``submission.json``, and
``orchestrator.cluster.submission.job_report`` reports its state.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cluster import connect
from orchestrator.cluster.jobs import (
    CLUSTER_LOST_EXIT,
    follow,
    jobs_of_study,
    lost_line,
    next_submission_id,
    say,
    submission_id,
)
from orchestrator.cluster.submission import record_submission
from results.tables.storage import SUBMISSION_FILE, is_uri, study_uri
from search_spaces.overrides import OVERRIDES_HELP
from trainables.errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

PACKAGES: tuple[str, ...] = ("orchestrator", "trainables", "search_spaces", "results")
ACTIVE = ("PENDING", "RUNNING")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        help="run a study on a Ray cluster (Jobs API); the driver runs on the cluster",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("spec", metavar="SPEC_OR_PRESET", help="a spec YAML file or a preset name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument(
        "--address",
        help="the cluster's dashboard URL, e.g. http://127.0.0.1:8265 "
        "(default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)",
    )
    p.add_argument(
        "--storage",
        help="study storage as the cluster sees it: a URI (s3://, gs://) or an absolute path "
        "every node mounts (default: the spec's storage)",
    )
    p.add_argument("--name", help="study name (default: the spec's name)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="stream the job's logs; exit 0 if it succeeds, else 1; "
        f"{CLUSTER_LOST_EXIT} if the cluster goes away",
    )
    code = p.add_mutually_exclusive_group()
    code.add_argument(
        "--working-dir",
        metavar="DIR",
        help="ship the prunetune packages of this checkout (default: this install's)",
    )
    code.add_argument(
        "--no-ship-code",
        action="store_true",
        help="ship only the spec; the cluster's image provides prunetune",
    )
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from search_spaces.spec import load_spec

    spec = load_spec(args.spec, name=args.name, storage=args.storage, overrides=args.overrides)
    require_cluster_storage(spec.storage)
    code_root = None if args.no_ship_code else project_root(args.working_dir)
    address = connect.resolve_address(args.address)
    client = connect.connect(address)
    if connect.auth_mode(address) == "disabled":
        say(
            f"warning: the cluster at {address} has token auth disabled: anyone who reaches its "
            "dashboard can run code there (start every node with RAY_AUTH_MODE=token)"
        )
    base = submission_id(spec.name, spec.hash)
    jobs = jobs_of_study(client, base)
    active = [j for j in jobs if str(j.status) in ACTIVE]
    done = [j for j in jobs if str(j.status) == "SUCCEEDED"]
    attached = bool(active or done)
    if attached:
        job = (active or done)[0]
        sid = job.submission_id
        say(f"study {spec.name} already has job {sid} ({job.status}): not submitting another")
    else:
        sid = _submit(
            client, spec, next_submission_id(base, [j.submission_id for j in jobs]), code_root
        )
        say(f"submitted job {sid} to {address}")
    print(sid, flush=True)
    resume = resubmit_command(args, spec, address)
    recorded = record_submission(
        spec.storage, spec.name, sid, address, spec.hash, resume, overwrite=not attached
    )
    if not recorded:
        say(f"note: {spec.storage} is not reachable from here; no {SUBMISSION_FILE} written")
    if args.follow:
        study = study_uri(spec.storage, spec.name)
        return follow(client, sid, lambda why: lost_line(address, sid, why, study, resume))
    say(f"follow it: prunetune submit {shlex.quote(args.spec)} --address {address} --follow")
    return 0


def resubmit_command(args: argparse.Namespace, spec, address: str) -> str:
    """The ``prunetune submit ... --follow`` that resumes this study on a cluster: the same spec
    (a file by its absolute path), overrides, storage, name and code as this submission, so it
    has the same spec hash. On a new head it starts a job that resumes the study from its
    storage; while the job still runs it attaches to it."""
    source = Path(args.spec).expanduser()
    words = ["prunetune", "submit", str(source.resolve()) if source.is_file() else args.spec]
    words += [*args.overrides, "--address", address]
    words += ["--storage", spec.storage, "--name", spec.name]
    if args.working_dir:
        words += ["--working-dir", str(Path(args.working_dir).expanduser().resolve())]
    if args.no_ship_code:
        words.append("--no-ship-code")
    return shlex.join([*words, "--follow"])


def require_cluster_storage(storage: str) -> None:
    """A submitted study's storage must mean the same on the cluster: a URI or an absolute path."""
    if is_uri(storage) or storage.startswith("/"):
        return
    raise UserError(
        f"storage: a submitted study needs a URI (s3://, gs://) or an absolute path that every "
        f"node mounts, got {storage!r} (a relative path would land in the job's temporary "
        "directory); pass --storage"
    )


def project_root(working_dir: str | None) -> Path:
    """The directory whose prunetune packages travel: `working_dir`, else this install's root."""
    if working_dir is None:
        import orchestrator

        return Path(orchestrator.__file__).resolve().parent.parent
    root = Path(working_dir).expanduser().resolve()
    missing = [p for p in PACKAGES if not (root / p / "__init__.py").is_file()]
    if missing:
        raise UserError(
            f"--working-dir: {root} is not a prunetune checkout (no {', '.join(missing)} package)"
        )
    return root


def entrypoint(spec_file: str, storage: str, name: str, shipped: bool) -> str:
    """The job's shell command: the prunetune CLI's `run`, driver connected to the cluster."""
    program = ["python", "-m", "orchestrator.cli.app"] if shipped else ["prunetune"]
    options = ["--storage", storage, "--name", name, "--address", "auto", "--job"]
    return shlex.join([*program, "run", spec_file, *options])


def _submit(client: JobSubmissionClient, spec, sid: str, code_root: Path | None) -> str:
    with tempfile.TemporaryDirectory(prefix="prunetune-submit-") as staging:
        (Path(staging) / "spec.yaml").write_text(spec.to_yaml())
        if code_root is not None:
            for package in PACKAGES:
                shutil.copytree(
                    code_root / package,
                    Path(staging) / package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
        command = entrypoint("spec.yaml", spec.storage, spec.name, code_root is not None)
        try:
            return client.submit_job(
                entrypoint=command,
                submission_id=sid,
                runtime_env={"working_dir": staging},
                metadata={"prunetune_study": spec.name, "prunetune_spec_hash": spec.hash},
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):  # another submit of this study won the race
                return sid
            raise
