"""Tune's run-state files in an experiment directory: which files they are, whether one is whole,
and reading and writing them (for :mod:`orchestrator.tune.good_state`).

Checked against Ray 2.60: Tune's experiment state ``experiment_state-<session>.json`` is JSON;
the search algorithm's ``basic-variant-state-*.json`` (grid), ``search_gen_state-*.json`` and
``searcher-state-*.pkl`` (Optuna) and the callbacks' ``callback-states-*.pkl`` are pickles,
whatever their names end in. Tune writes the pickles aside and renames them into place in its
staging directory, but its copy into the experiment directory overwrites each file in place.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import pickletools
import tarfile
from collections.abc import Iterable

import pyarrow.fs as pafs

from results.tables.snapshot import SNAPSHOT_PATTERN

STATE_PATTERNS = (
    SNAPSHOT_PATTERN,  # JSON; the others are pickles
    "basic-variant-state-*.json",
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
)


def state_names(names: Iterable[str]) -> list[str]:
    """The run-state file names among `names` (Tune's temporary files, dot-named, left out)."""
    return [
        n
        for n in names
        if not n.startswith(".") and any(fnmatch.fnmatch(n, p) for p in STATE_PATTERNS)
    ]


def state_infos(fs: pafs.FileSystem, exp_path: str) -> dict[str, pafs.FileInfo]:
    """The run-state files of `exp_path`, by name."""
    infos = fs.get_file_info(pafs.FileSelector(exp_path, allow_not_found=True))
    files = {i.base_name: i for i in infos if i.type == pafs.FileType.File}
    return {n: files[n] for n in state_names(files)}


def complete(name: str, data: bytes | None) -> bool:
    """Whether a run-state file's bytes are whole: JSON that parses, or a pickle that reaches
    its end mark (read opcode by opcode: nothing is unpickled)."""
    if not data:
        return False
    try:
        if fnmatch.fnmatch(name, SNAPSHOT_PATTERN):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
    except ValueError:
        return False
    return True


def pack(files: dict[str, bytes]) -> bytes:
    """Files by name as one tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of a :func:`pack` archive, by name."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """A file's bytes on `fs`."""
    with fs.open_input_stream(path) as f:
        return f.readall()


def local_bytes(directory: str, name: str) -> bytes:
    """A local file's bytes."""
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write aside, then rename into place: a failed write leaves the previous file."""
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
