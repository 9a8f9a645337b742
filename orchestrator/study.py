"""The study directory ``<storage>/<name>/``: create it, recognise it, guard its spec hash.

The layout and the filesystem are :mod:`results.storage`'s; this module decides when a study
directory is created, resumed or refused.

Rules: a study directory is created only after its spec validated (the caller passes a
`StudySpec`, which exists only if validation passed), so a bad spec writes nothing. An existing
study with the same spec hash is resumed; a different hash is refused with one line. A directory
that holds only ``submission.json`` (written by ``prunetune submit`` before the driver starts)
counts as not yet created.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.fs as pafs

from results import storage
from results.schema import prunetune_version
from results.storage import (
    META_FILE,
    OPTUNA_EXPERIMENT,
    SPEC_FILE,
    SUBMISSION_FILE,
    TRIALS_EXPERIMENT,
    TUNE_DIR,
    join_uri,
    study_uri,
)
from search_spaces.expand import StudyPlan
from search_spaces.spec import StudySpec, spec_from_yaml
from trainables.errors import UserError

# Files another command may write into a study directory before `run` creates the study.
PRE_STUDY_FILES = frozenset({SUBMISSION_FILE})


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


def open_for_run(spec: StudySpec, plan: StudyPlan) -> tuple[Study, bool]:
    """The study of a validated spec: created if new; ``(study, resumed)``.

    Raises UserError (one line) when the directory holds a study with another spec hash, or
    holds something that is not a prunetune study.
    """
    uri = study_uri(spec.storage, spec.name)
    fs, path = storage.resolve(uri)
    stored = _stored_hash(fs, path, uri)
    if stored is not None:
        if stored != spec.hash:
            raise UserError(
                f"study {uri} exists with spec hash {stored}; this spec hashes to {spec.hash}: "
                "use another --name or resume it"
            )
        return Study(uri, fs, path, spec, spec.hash, experiments_of(plan)), True
    _check_creatable(fs, path, uri)
    _create(fs, path, spec, plan)
    return Study(uri, fs, path, spec, spec.hash, experiments_of(plan)), False


def open_existing(study_dir: str) -> Study:
    """An existing study, its spec re-validated from ``spec.yaml`` and its hash checked.

    Refuses (UserError) a missing or foreign directory, an invalid spec.yaml and a spec.yaml
    whose content no longer hashes to the hash the study was created with (an edited spec).
    """
    fs, path = storage.resolve(study_dir)
    uri = study_dir if storage.is_uri(study_dir) else path
    stored = _stored_hash(fs, path, uri)
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


def _stored_hash(fs: pafs.FileSystem, path: str, uri: str) -> str | None:
    """The study's spec hash; None when the directory is absent or holds no ``study.json``."""
    info = fs.get_file_info(path)
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


def _check_creatable(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Refuse to turn a directory holding anything but pre-study files into a study."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    entries = fs.get_file_info(pafs.FileSelector(path))
    foreign = sorted(e.base_name for e in entries if e.base_name not in PRE_STUDY_FILES)
    if foreign:
        raise UserError(
            f"{uri}: exists and is not a prunetune study (holds {', '.join(foreign[:3])}); "
            "use another --name or --storage"
        )


def _create(fs: pafs.FileSystem, path: str, spec: StudySpec, plan: StudyPlan) -> None:
    """Write spec.yaml, then study.json (last: its presence marks a complete study record)."""
    fs.create_dir(path, recursive=True)
    storage.write_bytes(fs, posixpath.join(path, SPEC_FILE), spec.to_yaml().encode())
    meta = {
        "name": spec.name,
        "spec_hash": spec.hash,
        "prunetune_version": prunetune_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiments": list(experiments_of(plan)),
    }
    text = json.dumps(meta, indent=2) + "\n"
    storage.write_bytes(fs, posixpath.join(path, META_FILE), text.encode())
