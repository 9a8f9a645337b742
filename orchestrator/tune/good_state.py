"""The last good run state of an experiment, kept and put back as one set, so that a cut-short
write never strands a study nor loses a trial.

Tune's run state (checked against Ray 2.60) is several files, all rewritten at every snapshot: the
experiment state ``experiment_state-<session>.json`` (JSON: every trial and its status) and the
search algorithm's state, ``basic-variant-state-*.json`` for a grid (how many trials it has
generated, which of them are still live), ``search_gen_state-*.json`` plus
``searcher-state-*.pkl`` for Optuna, and ``callback-states-*.pkl`` for stateful callbacks. All but
the experiment state are pickles, whatever their names end in. Tune writes them into a staging
directory on the driver, then copies that directory into the experiment directory in a
background thread, file by file; a restore reads the newest file of each kind. They must come
from one snapshot: an experiment state older than its searcher's state misses trials the searcher
has already generated, and Tune never generates those again. Such a trial is lost, or, while the
searcher still counts it as live, Tune waits for it in its fixed 600 s wait for a next trial and
the study ends unfinished.

So :func:`keep_good_state` (called every second in the driver, by
:class:`~orchestrator.tune.diskfull.DiskGuard` and by the checkpoint janitor) takes a set only
when the experiment directory's run-state files are byte for byte those of the staging directory:
one snapshot, copied completely. (The callbacks run in the driver's main thread, which is also the
thread that writes the staging files, so these do not change while they are read. A snapshot
half copied into the experiment directory parses file by file, so parsing cannot tell.)
The set is written as one file, :data:`SET_FILE` (a tar archive, written aside and renamed into
place, so a failed write leaves the previous set whole), and then the set's snapshot again as
``<snapshot>.good``, which ``status`` reads (:mod:`results.tables.snapshot`) while the snapshot
itself is cut short, and by which the janitor prunes checkpoints (:func:`read_good_snapshot`):
never by something newer than the set, so every checkpoint the set refers to is still on storage.
Tune neither reads nor copies a name that does not end in ``.json`` or ``.pkl``.

Before a restore, :func:`restore_good_state` puts the whole set back when any run-state file is
missing, empty or cut short (JSON that does not parse, a pickle that ends before its end mark),
and removes the run-state files the set does not have (a later session's, half copied). Trials
created after the set was taken are unknown to the restored state; the caller removes their
directories (:func:`orchestrator.tune.janitor.remove_orphans`), and the searcher generates them
again (a grid trial under the same id, so in the same directory) and they run from the start.
"""

from __future__ import annotations

import os
import posixpath
import tarfile

import pyarrow.fs as pafs

from orchestrator.tune.state_files import (
    complete,
    local_bytes,
    pack,
    read_bytes,
    state_infos,
    state_names,
    unpack,
    write_atomic,
)
from results.tables.snapshot import GOOD_COPY as GOOD
from results.tables.snapshot import Snapshot, newest_snapshot_name, read_snapshot

SET_FILE = "run-state" + GOOD  # the last good set, one tar archive
_kept: dict[str, tuple] = {}  # experiment path -> (name, size, mtime) of the set last kept here


def keep_good_state(fs: pafs.FileSystem, exp_path: str, staging_dir: str) -> list[str]:
    """Keep the run-state files of `exp_path` as the last good set when they are exactly those of
    Tune's local `staging_dir` and changed since the last set; their names ([] when not kept)."""
    infos = state_infos(fs, exp_path)
    signature = tuple(sorted((n, i.size, i.mtime_ns) for n, i in infos.items()))
    if not infos or _kept.get(exp_path) == signature:
        return []
    try:
        staged = {n: local_bytes(staging_dir, n) for n in state_names(os.listdir(staging_dir))}
        files = {n: read_bytes(fs, i.path) for n, i in infos.items()}
    except FileNotFoundError:  # a copy under way, or no snapshot staged yet
        return []
    if files != staged:  # a snapshot half copied, or a copy that failed: keep the previous set
        return []  # (the staged files are whole: Tune wrote them in this thread, before the copy)
    write_atomic(fs, posixpath.join(exp_path, SET_FILE), pack(files))
    snapshot = newest_snapshot_name(files)
    if snapshot is not None:
        write_atomic(fs, posixpath.join(exp_path, snapshot + GOOD), files[snapshot])
    _kept[exp_path] = signature
    return sorted(files)


def read_good_snapshot(fs: pafs.FileSystem, exp_path: str) -> Snapshot | None:
    """The last good set's snapshot; None while there is none."""
    try:
        return read_snapshot(fs, exp_path, attempts=1, suffix=GOOD)
    except OSError:
        return None


def restore_good_state(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Put the last good set back in place of all the run state when any run-state file is
    missing, empty or cut short; the names of those files ([] when nothing was put back)."""
    try:
        good = unpack(read_bytes(fs, posixpath.join(exp_path, SET_FILE)))
    except (FileNotFoundError, tarfile.TarError):
        return []
    current = {n: read_bytes(fs, i.path) for n, i in state_infos(fs, exp_path).items()}
    names = set(good) | set(current)
    broken = sorted(n for n in names if not complete(n, current.get(n)))
    if not broken:
        return []
    # The broken files last: cut off midway, this leaves one for the next restore to find.
    for name in sorted(names, key=lambda n: (n in broken, n)):
        path = posixpath.join(exp_path, name)
        if name not in good:
            fs.delete_file(path)
        elif current.get(name) != good[name]:
            write_atomic(fs, path, good[name])
    return broken
