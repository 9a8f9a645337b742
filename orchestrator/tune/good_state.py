"""The last good copy of an experiment's run state, so that a cut-short write never strands it.

Tune copies its run state (``experiment_state-*.json``, the searcher's ``*-state-*.json``) into
the experiment directory over the previous copy; a full disk or a crash mid-copy leaves it cut
short, and a study whose newest ``experiment_state`` does not parse can only be started over.
So, each time the checkpoint janitor runs (:mod:`orchestrator.tune.janitor`), :func:`keep_good_state`
copies every such file that parses as JSON to ``<name>.good`` beside it (written aside and
renamed into place, so a failed copy leaves the previous good one; Tune neither reads nor copies
a name that does not end in ``.json`` or ``.pkl``), and the janitor prunes checkpoints by that
copy, never by something newer: every checkpoint the copy refers to is still on storage. Before a restore, :func:`restore_good_state` puts the copy back in place of
a file that is missing, empty or does not parse.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath

import pyarrow.fs as pafs

from results.tables.snapshot import GOOD_COPY as GOOD
from results.tables.snapshot import Snapshot, read_snapshot

STATE_PATTERNS = ("experiment_state-*.json", "*-state-*.json")


def keep_good_state(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Copy each run-state file of `exp_path` that parses and changed since its last copy to
    ``<name>.good``; their names."""
    kept = []
    files, copies = _state_files(fs, exp_path)
    for name, info in files.items():
        copy = copies.get(name)
        if copy is not None and copy.size == info.size and copy.mtime >= info.mtime:
            continue
        data = _read(fs, info.path)
        if data is not None:
            _write_atomic(fs, info.path + GOOD, data)
            kept.append(name)
    return kept


def read_good_snapshot(fs: pafs.FileSystem, exp_path: str) -> Snapshot | None:
    """The good copy of the newest snapshot; None while there is none."""
    try:
        return read_snapshot(fs, exp_path, attempts=1, suffix=GOOD)
    except OSError:
        return None


def restore_good_state(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Put the good copy back where a run-state file is missing or does not parse; their names."""
    restored = []
    files, copies = _state_files(fs, exp_path)
    for name, copy in copies.items():
        if name in files and _read(fs, files[name].path) is not None:
            continue
        data = _read(fs, copy.path)
        if data is not None:
            _write_atomic(fs, posixpath.join(exp_path, name), data)
            restored.append(name)
    return restored


def _state_files(
    fs: pafs.FileSystem, exp_path: str
) -> tuple[dict[str, pafs.FileInfo], dict[str, pafs.FileInfo]]:
    """(run-state files, their good copies), each by the run-state file's name."""
    infos = fs.get_file_info(pafs.FileSelector(exp_path, allow_not_found=True))
    files, copies = {}, {}
    for i in infos:
        name = i.base_name.removesuffix(GOOD)
        if i.type == pafs.FileType.File and any(fnmatch.fnmatch(name, p) for p in STATE_PATTERNS):
            (copies if i.base_name.endswith(GOOD) else files)[name] = i
    return files, copies


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The file's bytes if it parses as JSON, else None."""
    try:
        with fs.open_input_stream(path) as f:
            data = f.readall()
        json.loads(data)
    except (OSError, ValueError):
        return None
    return data


def _write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
