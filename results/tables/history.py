"""Parse Ray Tune ``result.json`` files (JSON lines, one reported result per line) into Arrow.

Each line is one ``tune.report`` of the trainable: the record of ``trainables.records`` plus the
keys Tune adds (``results.tables.schema.TUNE_STORED`` / ``TUNE_IGNORED``, Tune's copy of the config
among them). pyarrow's C++ JSON reader parses whole batches of files with the explicit schema
``results.tables.schema.RESULT``; every record value, the per-layer lists included, is plain JSON, so
nothing is cut out or searched for by hand. A batch pyarrow rejects (say an epoch written as
``3.0``) is parsed again file by file with :mod:`json` and checked value by value, so a bad line
is reported with its file and line.

Keys outside the schema and outside Tune's known keys are read past: a newer Tune may add some.
With ``strict`` (the default when ``$PRUNETUNE_STRICT_RECORDS`` is set, as the test suite does)
they are an error instead, so a key the trainable starts reporting can never be dropped unseen.

A file may end in a partial line (a driver killed mid-write): that line is dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pj

from results.tables.schema import RESULT, TUNE_IGNORED

RESULT_FILE = "result.json"
STRICT_ENV = "PRUNETUNE_STRICT_RECORDS"
_PARSE = pj.ParseOptions(explicit_schema=RESULT, unexpected_field_behavior="ignore")
_READ = pj.ReadOptions(block_size=16 << 20)
_KNOWN = frozenset(RESULT.names) | TUNE_IGNORED
BATCH_FILES = 256


def parse_histories(
    blobs: Sequence[bytes], names: Sequence[str] | None = None, strict: bool | None = None
) -> pa.Table:
    """Parse result files into one table: ``RESULT`` + ``source``.

    Args:
        blobs: the bytes of each trial's result.json (b"" when a trial has none).
        names: the files' names, for error messages (default: their index).
        strict: unknown keys are an error (default: ``$PRUNETUNE_STRICT_RECORDS`` set).

    Returns:
        One row per complete line, in file order then line order; ``source`` (int32) is the index
        of the blob a row came from. No de-duplication: see :func:`latest_per_epoch`.
    """
    names = list(names) if names is not None else [str(i) for i in range(len(blobs))]
    strict = _strict(strict)
    tables = [
        _parse_batch(list(blobs[lo : lo + BATCH_FILES]), names[lo : lo + BATCH_FILES], lo, strict)
        for lo in range(0, len(blobs), BATCH_FILES)
    ]
    return pa.concat_tables(tables) if tables else _empty()


def latest_per_epoch(history: pa.Table) -> pa.Table:
    """Keep the last line reported for each (source, epoch), sorted by (source, epoch).

    A resumed trial re-reports the epochs after its checkpoint; Tune appends them, so the last
    line of an epoch is the latest value. Lines without an epoch are dropped.
    """
    epoch = history.column("epoch")
    valid = np.asarray(epoch.is_valid())
    source = history.column("source").to_numpy()
    ep = epoch.fill_null(0).to_numpy()
    row = np.arange(history.num_rows)
    order = np.lexsort((row, ep, source))
    order = order[valid[order]]
    s, e = source[order], ep[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (s[1:] != s[:-1]) | (e[1:] != e[:-1])
    keep = order[last]
    if len(keep) == history.num_rows and (keep == row).all():
        return history  # the usual case: nothing re-reported, already in order
    return history.take(pa.array(keep))


def read_histories(
    fs: pafs.FileSystem, paths: Sequence[str], threads: int = 4, strict: bool | None = None
) -> pa.Table:
    """Read and parse each trial's result file ("" or a missing file: no rows), batch by batch.

    Only one batch of files is in memory at a time: a 10,000 x 100-epoch study's result files
    hold about 2 GB, mostly Tune's copies of the configs.
    """

    def read(path: str) -> bytes:
        if not path:
            return b""
        try:
            with fs.open_input_stream(path) as f:
                return f.readall()
        except FileNotFoundError:
            return b""

    strict = _strict(strict)
    tables = []
    with ThreadPoolExecutor(threads) as pool:
        for lo in range(0, len(paths), BATCH_FILES):
            batch = list(paths[lo : lo + BATCH_FILES])
            tables.append(_parse_batch(list(pool.map(read, batch)), batch, lo, strict))
    return pa.concat_tables(tables) if tables else _empty()


def _strict(strict: bool | None) -> bool:
    return bool(os.environ.get(STRICT_ENV)) if strict is None else strict


def _empty() -> pa.Table:
    return pa.schema([*RESULT, pa.field("source", pa.int32())]).empty_table()


def _complete(blob: bytes) -> bytes:
    """Drop a trailing partial line (a writer killed mid-line)."""
    return blob[: blob.rfind(b"\n") + 1]


def _check_keys(blob: bytes, name: str) -> None:
    """Strict mode: every key of every line is a record key or a known Tune key."""
    for number, line in enumerate(blob.splitlines(), start=1):
        if line.strip():
            unknown = sorted(set(json.loads(line)) - _KNOWN)
            if unknown:
                raise ValueError(
                    f"{name}: line {number}: unknown result key {unknown[0]!r}; declare it in "
                    "trainables.records.RECORD (or results.tables.schema's Tune keys)"
                )


def _parse_batch(blobs: list[bytes], names: list[str], offset: int, strict: bool) -> pa.Table:
    """Fast path: one pyarrow parse of the batch; rows must match lines one to one (a blank line,
    which pyarrow skips, or any value it rejects sends the batch to the checked slow path)."""
    blobs = [_complete(b) for b in blobs]
    if strict:
        for blob, name in zip(blobs, names, strict=True):
            _check_keys(blob, name)
    counts = np.array([b.count(b"\n") for b in blobs], dtype=np.int64)
    try:
        table = pj.read_json(
            pa.BufferReader(b"".join(blobs)), read_options=_READ, parse_options=_PARSE
        )
        if table.num_rows != counts.sum():
            raise ValueError("row count differs from line count")
    except (pa.ArrowInvalid, ValueError):
        parts = [_parse_slow(b, n) for b, n in zip(blobs, names, strict=True)]
        table = pa.concat_tables(parts) if parts else RESULT.empty_table()
        counts = np.array([p.num_rows for p in parts], dtype=np.int64)
    source = np.repeat(np.arange(offset, offset + len(blobs), dtype=np.int32), counts)
    return table.append_column("source", pa.array(source))


def _parse_slow(blob: bytes, name: str) -> pa.Table:
    """Parse one file with :mod:`json`, checking every value against ``RESULT``."""
    columns: dict[str, list] = {f.name: [] for f in RESULT}
    for number, line in enumerate(blob.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: not a JSON object")
        for field in RESULT:
            columns[field.name].append(
                _checked(record.get(field.name), field.type, f"{where}: {field.name}")
            )
    try:
        return pa.table(columns, schema=RESULT)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _checked(value: object, t: pa.DataType, where: str) -> object:
    """`value` converted to type `t` where JSON allows (3.0 for an int64); else ValueError."""
    if value is None:
        return None
    if t == pa.bool_() and isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    if t == pa.int64() and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    if t == pa.float64() and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if t == pa.string() and isinstance(value, str):
        return value
    if pa.types.is_list(t) and isinstance(value, list):
        return [_checked(v, t.value_type, where) for v in value]
    if pa.types.is_struct(t) and isinstance(value, dict):
        return {f.name: _checked(value.get(f.name), f.type, where) for f in t}
    raise ValueError(f"{where}: must be {t}, got {value!r}")
