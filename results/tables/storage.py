"""The study directory: its layout, its filesystem, its metadata, atomic writes.

A study lives in ``<storage>/<name>/`` (a local path or any URI pyarrow's filesystems understand:
``file://``, ``s3://``, ``gs://``, ...). Every file name of the layout is defined here:

- ``spec.yaml``: the resolved spec, first line ``# spec-hash: <hex>``;
- ``study.json``: ``name``, ``spec_hash``, ``prunetune_version``, ``created``, ``experiments``,
  ``environment`` (the driver's, at creation: ``results.tables.environment.KEYS``; absent in studies
  created before it was recorded);
- ``tune/<experiment>/``: the Ray Tune experiments (``trials``, then ``optuna``), the source of
  truth;
- ``<table>.parquet`` for each of :data:`TABLES`, and ``report.html``: derived from ``tune/``;
- ``optuna.db`` (an Optuna search only): an Optuna RDB storage (SQLite) holding the search as one
  Optuna study named after the study, for optuna-dashboard and ``optuna.visualization``; derived
  from ``tune/optuna`` and kept current while the study runs (``orchestrator.optuna_mirror.mirror``);
- ``submission.json``: written by ``prunetune submit`` (possibly before the study exists);
- ``.driver.lock`` / ``driver-lease.json``: the lock of the driver running the study
  (``orchestrator.study.lock``).

Object stores can retry a request for minutes when the network or the credentials are wrong, so
every command first reaches its location through :func:`open_location`, which gives up after
``timeout_s`` (:data:`REACH_TIMEOUT_S`, 30 s; the environment variable
``PRUNETUNE_STORAGE_TIMEOUT_S`` changes it) with one line.

Writes go to a temporary sibling, then replace the target in one rename (``os.replace`` locally,
``FileSystem.move`` elsewhere; on object stores one object write is already atomic), so a reader
never sees a half-written table or report.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import threading
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.errors import UserError

SPEC_FILE = "spec.yaml"
META_FILE = "study.json"
TUNE_DIR = "tune"
REPORT_FILE = "report.html"
OPTUNA_DB = "optuna.db"
SUBMISSION_FILE = "submission.json"
LOCK_FILE = ".driver.lock"
LEASE_FILE = "driver-lease.json"
TABLES: tuple[str, ...] = ("trials", "epochs", "events", "layer_events", "fits")
TRIALS_EXPERIMENT = "trials"
OPTUNA_EXPERIMENT = "optuna"
SPEC_HASH_PREFIX = "# spec-hash:"
# Files other commands may write into a study directory before `run` creates the study.
PRE_STUDY_FILES = frozenset({SUBMISSION_FILE, LOCK_FILE, LEASE_FILE})
# Filesystems (pyarrow's type_name) whose paths start with a bucket.
BUCKET_STORES = frozenset({"s3", "gcs"})
# Seconds a command waits for a storage URI to answer; PRUNETUNE_STORAGE_TIMEOUT_S overrides it.
REACH_TIMEOUT_S = float(os.environ.get("PRUNETUNE_STORAGE_TIMEOUT_S", "30"))


def table_file(name: str) -> str:
    """The file name of table `name` (one of :data:`TABLES`)."""
    return f"{name}.parquet"


@dataclass(frozen=True)
class StudyMeta:
    """The facts a study directory states about itself."""

    name: str
    spec_hash: str
    spec_text: str  # the resolved spec.yaml ("" when absent)
    prunetune_version: str  # the version that created the study
    # The driver's environment at creation (results.tables.environment); None when not recorded.
    environment: dict | None = None


def is_uri(location: str) -> bool:
    """Whether `location` names a pyarrow filesystem URI (s3://, gs://, file://, ...)."""
    return "://" in location


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it of a local path (``~`` expanded, made absolute) or a
    URI. Nothing is contacted (see :func:`open_location`)."""
    if is_uri(location):
        try:
            fs, path = pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            detail = " ".join(str(exc).split())
            raise UserError(f"{location}: not a usable filesystem URI ({detail})") from None
        if not path.strip("/") and not isinstance(fs, pafs.LocalFileSystem):
            raise UserError(f"{location}: names no bucket or path; give e.g. s3://BUCKET/studies")
        return fs, path.rstrip("/") or "/"
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def open_location(
    location: str, timeout_s: float | None = None
) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """:func:`resolve`, then reach the location: its ``FileInfo``, within ``timeout_s`` seconds
    (default :data:`REACH_TIMEOUT_S`, read at call time).

    Raises UserError (one line) when the filesystem refuses (credentials, network, a path through
    a file), when the bucket of an object-store path does not exist, or when it does not answer in
    time. Local paths are checked directly.
    """
    timeout_s = REACH_TIMEOUT_S if timeout_s is None else timeout_s
    fs, path = resolve(location)
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            return fs, path, fs.get_file_info(path)
        except OSError as exc:
            raise UserError(f"{location}: {exc.strerror or exc}") from None
    outcome: list = []
    probe = threading.Thread(target=lambda: outcome.append(_try(_probe, fs, path)), daemon=True)
    probe.start()
    probe.join(timeout_s)
    if not outcome:
        raise UserError(
            f"{location}: the storage did not answer within {timeout_s:.0f} s "
            "(network, endpoint or credentials?)"
        )
    value = outcome[0]
    if isinstance(value, UserError):
        raise UserError(f"{location}: {value}")
    if isinstance(value, Exception):
        detail = " ".join(str(value).split())
        raise UserError(f"{location}: cannot reach the storage ({detail}; credentials?)")
    return fs, path, value


def _probe(fs: pafs.FileSystem, path: str) -> pafs.FileInfo:
    """The path's FileInfo; a missing bucket (the path's first segment) is a UserError: object
    stores answer "not found" for any key of it, and prunetune never creates buckets."""
    info = fs.get_file_info(path)
    bucket = path.strip("/").split("/", 1)[0]
    if info.type == pafs.FileType.NotFound and fs.type_name in BUCKET_STORES:
        if bucket == path.strip("/") or fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return UserError(f"bucket {bucket!r} does not exist; create it first")
    return info


def _try(call, *args):
    try:
        return call(*args)
    except Exception as exc:  # handed to the caller, which says it in one line
        return exc


def join_uri(base: str, *parts: str) -> str:
    """Append path segments to a local path or a URI, keeping any ``?query`` at the end."""
    head, sep, query = base.partition("?")
    joined = posixpath.join(head.rstrip("/") or "/", *parts)
    return f"{joined}{sep}{query}"


def study_uri(storage_root: str, name: str) -> str:
    """``<storage>/<name>`` for a local path (made absolute) or a URI (query string kept)."""
    if not is_uri(storage_root):
        return posixpath.join(resolve(storage_root)[1], name)
    return join_uri(storage_root, name)


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when it does not exist; UserError when it is not UTF-8."""
    try:
        with fs.open_input_stream(path) as f:
            data = f.readall()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); damaged?") from None


def read_meta(fs: pafs.FileSystem, study_path: str, study_dir: str) -> StudyMeta:
    """Read ``study.json`` (required) and ``spec.yaml``; raises UserError naming what is wrong."""
    info = fs.get_file_info(study_path)
    if info.type == pafs.FileType.File:
        raise UserError(f"study directory {study_dir!r}: is a file, not a study directory")
    if info.type != pafs.FileType.Directory:
        raise UserError(f"study directory {study_dir!r}: not found")
    raw = read_text(fs, posixpath.join(study_path, META_FILE))
    if raw is None:
        raise UserError(
            f"study directory {study_dir!r}: {META_FILE} missing; not a prunetune study"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{study_dir}/{META_FILE}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UserError(f"{study_dir}/{META_FILE}: must be an object with a string 'name'")
    spec_text = read_text(fs, posixpath.join(study_path, SPEC_FILE)) or ""
    spec_hash = data.get("spec_hash") or _hash_line(spec_text)
    return StudyMeta(
        name=data["name"],
        spec_hash=str(spec_hash or ""),
        spec_text=spec_text,
        prunetune_version=str(data.get("prunetune_version", "")),
        environment=data["environment"] if isinstance(data.get("environment"), dict) else None,
    )


def _hash_line(spec_text: str) -> str:
    first = spec_text.split("\n", 1)[0]
    return first[len(SPEC_HASH_PREFIX) :].strip() if first.startswith(SPEC_HASH_PREFIX) else ""


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write `table` to `path` atomically (zstd, statistics on; byte-identical for equal tables)."""

    def write(sink: str | pa.NativeFile) -> None:
        pq.write_table(table, sink, compression="zstd")

    _atomic(fs, path, write)


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` atomically."""

    def write(sink: str | pa.NativeFile) -> None:
        if isinstance(sink, str):
            with open(sink, "wb") as f:
                f.write(data)
        else:
            sink.write(data)

    _atomic(fs, path, write)


def replace_local(path: str, write) -> None:
    """Write a local file atomically: ``write(tmp)`` fills a temporary sibling, which then
    replaces `path` in one rename (removed if anything fails)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic(fs: pafs.FileSystem, path: str, write) -> None:
    directory = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):
        replace_local(path, write)
        return
    tmp = posixpath.join(directory, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(tmp) as sink:
            write(sink)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise
