"""Where a study lives: local paths or pyarrow-filesystem URIs, its metadata, atomic writes.

A study directory (local path, ``file://``, ``s3://``, ``gs://``, ...) holds ``spec.yaml`` (first
line ``# spec-hash: <hex>``), ``study.json`` (``name``, ``spec_hash``, ``prunetune_version``) and
``tune/<experiment>/``. Writes go to a temporary sibling, then replace the target in one rename
(``os.replace`` locally, ``FileSystem.move`` elsewhere; on object stores one object write is
already atomic), so a reader never sees a half-written table or report.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.errors import UserError


@dataclass(frozen=True)
class StudyMeta:
    """The facts a study directory states about itself."""

    name: str
    spec_hash: str
    spec_text: str  # the resolved spec.yaml ("" when absent)
    prunetune_version: str  # the version that created the study


def resolve(study_dir: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it of `study_dir` (a local path or a URI)."""
    if "://" in study_dir:
        try:
            fs, path = pafs.FileSystem.from_uri(study_dir)
        except (pa.ArrowInvalid, ValueError, OSError) as exc:
            raise UserError(f"study directory {study_dir!r}: cannot open ({exc})") from None
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(study_dir)


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with fs.open_input_stream(path) as f:
            return f.readall().decode("utf-8")
    except FileNotFoundError:
        return None


def read_meta(fs: pafs.FileSystem, study_path: str, study_dir: str) -> StudyMeta:
    """Read ``study.json`` (required) and ``spec.yaml``; raises UserError naming what is wrong."""
    info = fs.get_file_info(study_path)
    if info.type != pafs.FileType.Directory:
        raise UserError(f"study directory {study_dir!r}: not found")
    raw = read_text(fs, posixpath.join(study_path, "study.json"))
    if raw is None:
        raise UserError(f"study directory {study_dir!r}: study.json missing; not a prunetune study")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{study_dir}/study.json: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UserError(f"{study_dir}/study.json: must be an object with a string 'name'")
    spec_text = read_text(fs, posixpath.join(study_path, "spec.yaml")) or ""
    spec_hash = data.get("spec_hash") or _hash_line(spec_text)
    return StudyMeta(
        name=data["name"],
        spec_hash=str(spec_hash or ""),
        spec_text=spec_text,
        prunetune_version=str(data.get("prunetune_version", "")),
    )


def _hash_line(spec_text: str) -> str:
    first = spec_text.split("\n", 1)[0]
    prefix = "# spec-hash:"
    return first[len(prefix) :].strip() if first.startswith(prefix) else ""


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


def _atomic(fs: pafs.FileSystem, path: str, write) -> None:
    directory = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fd, tmp = tempfile.mkstemp(prefix=f".{posixpath.basename(path)}.", dir=directory)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
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
