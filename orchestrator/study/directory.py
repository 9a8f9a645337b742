"""The study directory ``<storage>/<name>/``: create it, recognise it, guard its spec hash.

The layout and the filesystem are :mod:`results.tables.storage`'s; this module decides when a study
directory is created, resumed or refused.

Rules: a study directory is created only after its spec validated (the caller passes a
`StudySpec`, which exists only if validation passed), so a bad spec writes nothing. An existing
study with the same spec hash is resumed; a different hash is refused with one line. A directory
that holds only ``submission.json`` (written by ``prunetune submit`` before the driver starts)
counts as not yet created.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.fs as pafs

from results.tables import storage
from results.tables.environment import environment
from results.tables.schema import prunetune_version
from results.tables.storage import (
    META_FILE,
    OPTUNA_EXPERIMENT,
    PRE_STUDY_FILES,
    SPEC_FILE,
    TRIALS_EXPERIMENT,
    TUNE_DIR,
    join_uri,
    study_uri,
)
from search_spaces.expand import StudyPlan
from search_spaces.spec import StudySpec, spec_from_yaml
from trainables.errors import UserError


@dataclass(frozen=True)
class Study:
    """An existing study directory: where it is and what it holds."""

    uri: str  # as the user gave it (local paths made absolute); what the CLI prints
    fs: pafs.FileSystem
    path: str  # the directory's path on `fs`
    spec: StudySpec  # re-validated from spec.yaml (or the spec that just created it)
    spec_hash: str
    experiments: tuple[str, ...]  # Tune experiments, in run order

    def tune_uri(self, experiment: str) -> str:
        """The experiment directory as Tune's ``storage_path``-style URI or absolute path."""
        return join_uri(self.uri, TUNE_DIR, experiment)

    def tune_path(self, experiment: str) -> str:
        """The experiment directory's path on `fs`."""
        return posixpath.join(self.path, TUNE_DIR, experiment)


def experiments_of(plan: StudyPlan) -> tuple[str, ...]:
    """The study's Tune experiments, in run order: ``trials`` (the fixed trials and baselines;
    absent only for an Optuna study without baselines), then ``optuna``."""
    fixed = (TRIALS_EXPERIMENT,) if plan.trials or not plan.optuna else ()
    return fixed + ((OPTUNA_EXPERIMENT,) if plan.optuna else ())


@dataclass(frozen=True)
class Target:
    """Where a validated spec's study lives, checked and nothing written: ``exists`` says whether
    running the spec resumes a study (same spec hash) or creates one."""

    uri: str
    fs: pafs.FileSystem
    path: str
    exists: bool


def locate(spec: StudySpec, check_driver: bool = True) -> Target:
    """Check where the spec's study goes, writing nothing (UserError, one line, otherwise).

    Refuses storage that cannot be reached, a study directory holding a study with another spec
    hash or something that is not a prunetune study, a study another driver runs now, and (local
    paths) a place that cannot be created: a path through a file, or a read-only parent.
    ``check_driver=False`` skips the running-driver check (for a driver that holds the lock).
    """
    uri = study_uri(spec.storage, spec.name)
    fs, path, info = storage.open_location(uri)
    stored = _stored_hash(fs, path, uri, info)
    if stored is not None:
        if stored != spec.hash:
            raise UserError(
                f"study {uri} exists with spec hash {stored}; this spec hashes to {spec.hash}: "
                "use another --name or resume it"
            )
        if check_driver:
            check_not_driven(fs, path, uri)
        return Target(uri, fs, path, True)
    if check_driver and info.type == pafs.FileType.Directory:  # a driver creating it now
        check_not_driven(fs, path, uri)
    _check_creatable(fs, path, uri, info, check_driver)
    return Target(uri, fs, path, False)


def open_for_run(target: Target, spec: StudySpec, plan: StudyPlan) -> Study:
    """The study at a :func:`locate` target: created (spec.yaml, study.json) unless it exists."""
    if not target.exists:
        _create(target.fs, target.path, spec, plan)
    return Study(target.uri, target.fs, target.path, spec, spec.hash, experiments_of(plan))


def check_not_driven(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Refuse at once (before Ray starts) a study another driver is running; the driver's lock is
    still taken later (orchestrator.study.lock.acquire), which settles a race between two starts."""
    from orchestrator.study.holder import describe_driver, driver_of, refusal

    holder = driver_of(fs, path)
    if holder is not None:
        raise refusal(uri, describe_driver(holder))


def open_existing(study_dir: str) -> Study:
    """An existing study, its spec re-validated from ``spec.yaml`` and its hash checked.

    Refuses (UserError) a missing or foreign directory, an invalid spec.yaml and a spec.yaml
    whose content no longer hashes to the hash the study was created with (an edited spec).
    """
    fs, path, info = storage.open_location(study_dir)
    uri = study_dir if storage.is_uri(study_dir) else path
    stored = _stored_hash(fs, path, uri, info)
    if stored is None:
        raise UserError(f"{uri}: not a prunetune study directory (no {META_FILE})")
    text = storage.read_text(fs, posixpath.join(path, SPEC_FILE))
    if text is None:
        raise UserError(f"{uri}: {SPEC_FILE} missing; cannot resume")
    spec = spec_from_yaml(text, f"{uri}/{SPEC_FILE}")
    if spec.hash != stored:
        raise UserError(
            f"study {uri} was created with spec hash {stored} but its {SPEC_FILE} now hashes to "
            f"{spec.hash} (edited?); restore the original {SPEC_FILE} or start a new study"
        )
    from search_spaces.expand import expand

    return Study(uri, fs, path, spec, stored, experiments_of(expand(spec)))


def _stored_hash(fs: pafs.FileSystem, path: str, uri: str, info: pafs.FileInfo) -> str | None:
    """The study's spec hash; None when the directory is absent or holds no ``study.json``."""
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type != pafs.FileType.Directory:
        raise UserError(f"{uri}: exists and is not a directory")
    raw = storage.read_text(fs, posixpath.join(path, META_FILE))
    if raw is None:
        return None
    try:
        return str(json.loads(raw)["spec_hash"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{uri}/{META_FILE}: unreadable; not a valid study record") from None


def _check_creatable(
    fs: pafs.FileSystem, path: str, uri: str, info: pafs.FileInfo, check_driver: bool = True
) -> None:
    """Refuse to turn a directory holding anything but pre-study files into a study, and (local
    paths) a study directory that could not be created. Files of a study that a live driver is
    creating right now (its spec.yaml before its study.json) are that driver's: with
    `check_driver`, the refusal names it instead."""
    if info.type == pafs.FileType.NotFound:
        if isinstance(fs, pafs.LocalFileSystem):
            _check_local_parent(path, uri)
        return
    entries = fs.get_file_info(pafs.FileSelector(path))
    foreign = sorted(e.base_name for e in entries if e.base_name not in PRE_STUDY_FILES)
    if foreign:
        if check_driver:
            check_not_driven(fs, path, uri)
        raise UserError(
            f"{uri}: exists and is not a prunetune study (holds {', '.join(foreign[:3])}); "
            "use another --name or --storage"
        )


def _check_local_parent(path: str, uri: str) -> None:
    """The nearest existing ancestor of a new local study directory is a writable directory."""
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"storage: {parent} is a file, not a directory; cannot create {uri}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"storage: {parent} is not writable (permission denied); cannot create {uri}"
        )


def _create(fs: pafs.FileSystem, path: str, spec: StudySpec, plan: StudyPlan) -> None:
    """Write spec.yaml, then study.json (last: its presence marks a complete study record), with
    the driver's environment (``results.tables.environment``) as it was at creation."""
    try:
        fs.create_dir(path, recursive=True)
    except OSError as exc:
        raise UserError(f"storage: cannot create {path}: {exc.strerror or exc}") from None
    storage.write_bytes(fs, posixpath.join(path, SPEC_FILE), spec.to_yaml().encode())
    meta = {
        "name": spec.name,
        "spec_hash": spec.hash,
        "prunetune_version": prunetune_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiments": list(experiments_of(plan)),
        "environment": environment(),
    }
    text = json.dumps(meta, indent=2) + "\n"
    storage.write_bytes(fs, posixpath.join(path, META_FILE), text.encode())
