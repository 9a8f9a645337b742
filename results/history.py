"""Parse Ray Tune ``result.json`` files (JSON lines, one reported result per line) into Arrow.

Each line is one ``tune.report`` of the trainable: the per-epoch record keys of
``trainables/records.py`` plus Tune's own keys (and Tune's copy of the trial config, which is
ignored here). The fast path hands whole batches of files to pyarrow's C++ JSON reader with an
explicit schema; a batch it rejects (say an epoch written as ``3.0``) is parsed again file by file
with :mod:`json` and checked value by value, so a bad line is reported with its file and line.

The nested ``units_removed`` object ({layer: units}) is not in the explicit schema (pyarrow cannot
read a JSON object into a map); it is found by its key and decoded alone, line by line.

Tune appends its copy of the trial config near the end of every line (over half of the bytes);
when a file's first line shows that no key this module reads follows ``"config"``, the fast path
cuts that tail off each line before parsing.

A file may end in a partial line (a driver killed mid-write): that line is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pj

from results.schema import EPOCH_VALUE_FIELDS, UNITS_BY_LAYER

RESULT_FILE = "result.json"
RESULT_SCHEMA = pa.schema([pa.field(n, t) for n, t in EPOCH_VALUE_FIELDS])
_PARSE = pj.ParseOptions(explicit_schema=RESULT_SCHEMA, unexpected_field_behavior="ignore")
_READ = pj.ReadOptions(block_size=16 << 20)
_UNITS_KEY = re.compile(rb'"units_removed"\s*:\s*\{')
_CONFIG_TAIL = re.compile(rb', "config": \{.*')
_NEEDED = frozenset(RESULT_SCHEMA.names) | {"units_removed"}
BATCH_FILES = 256


def parse_histories(blobs: Sequence[bytes], names: Sequence[str] | None = None) -> pa.Table:
    """Parse result files into one table: ``RESULT_SCHEMA`` + ``units_removed`` + ``source``.

    Args:
        blobs: the bytes of each trial's result.json (b"" when a trial has none).
        names: the files' names, for error messages (default: their index).

    Returns:
        One row per complete line, in file order then line order; ``source`` (int32) is the index
        of the blob a row came from and ``units_removed`` a map<string, int64> (null off events).
        No de-duplication: see :func:`latest_per_epoch`.
    """
    names = list(names) if names is not None else [str(i) for i in range(len(blobs))]
    tables = [
        _parse_batch(list(blobs[lo : lo + BATCH_FILES]), names[lo : lo + BATCH_FILES], lo)
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


def read_histories(fs: pafs.FileSystem, paths: Sequence[str], threads: int = 4) -> pa.Table:
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

    tables = []
    with ThreadPoolExecutor(threads) as pool:
        for lo in range(0, len(paths), BATCH_FILES):
            batch = list(paths[lo : lo + BATCH_FILES])
            tables.append(_parse_batch(list(pool.map(read, batch)), batch, lo))
    return pa.concat_tables(tables) if tables else _empty()


def _empty() -> pa.Table:
    fields = [
        *RESULT_SCHEMA,
        pa.field("units_removed", UNITS_BY_LAYER),
        pa.field("source", pa.int32()),
    ]
    return pa.schema(fields).empty_table()


def _complete(blob: bytes) -> bytes:
    """Drop a trailing partial line (a writer killed mid-line)."""
    return blob[: blob.rfind(b"\n") + 1]


def _without_config(blob: bytes) -> bytes:
    """`blob` with each line's trailing ``"config": {...}`` (and what follows) cut, when safe."""
    if not blob:
        return blob
    first = json.loads(blob[: blob.index(b"\n")])
    keys = list(first) if isinstance(first, dict) else []
    if "config" not in keys or _NEEDED.intersection(keys[keys.index("config") + 1 :]):
        return blob
    return _CONFIG_TAIL.sub(b"}", blob)


def _parse_batch(blobs: list[bytes], names: list[str], offset: int) -> pa.Table:
    """Fast path: one pyarrow parse of the batch; rows must match lines one to one (a blank line,
    which pyarrow skips, or any value it rejects sends the batch to the checked slow path)."""
    blobs = [_complete(b) for b in blobs]
    counts = np.array([b.count(b"\n") for b in blobs], dtype=np.int64)
    try:
        buf = b"".join(_without_config(b) for b in blobs)
        table = pj.read_json(pa.BufferReader(buf), read_options=_READ, parse_options=_PARSE)
        if table.num_rows != counts.sum():
            raise ValueError("row count differs from line count")
        units = _units_column(buf, table.num_rows)
    except (pa.ArrowInvalid, ValueError):  # json.JSONDecodeError is a ValueError
        parts = [_parse_slow(b, n) for b, n in zip(blobs, names, strict=True)]
        table = pa.concat_tables([p[0] for p in parts]) if parts else RESULT_SCHEMA.empty_table()
        units = pa.array([u for p in parts for u in p[1]], type=UNITS_BY_LAYER)
        counts = np.array([p[0].num_rows for p in parts], dtype=np.int64)
    source = np.repeat(np.arange(offset, offset + len(blobs), dtype=np.int32), counts)
    return table.append_column("units_removed", units).append_column("source", pa.array(source))


def _units_column(buf: bytes, n_lines: int) -> pa.Array:
    """The units_removed map of every line of `buf` (null where the line has none)."""
    values: list[list[tuple[str, int]] | None] = [None] * n_lines
    line = prev = 0
    for match in _UNITS_KEY.finditer(buf):
        line += buf.count(b"\n", prev, match.start())
        prev = match.start()
        start = match.end() - 1
        try:
            units = json.loads(buf[start : buf.index(b"}", start) + 1])
        except json.JSONDecodeError:  # a layer name holding "}": decode the whole line instead
            begin = buf.rfind(b"\n", 0, start) + 1
            units = json.loads(buf[begin : buf.index(b"\n", start)])["units_removed"]
        values[line] = _units_items(units)
    return pa.array(values, type=UNITS_BY_LAYER)


def _units_items(units: object) -> list[tuple[str, int]] | None:
    if units is None:
        return None
    if not isinstance(units, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in units.values()
    ):
        raise ValueError(f"units_removed: must map layer names to integers, got {units!r}")
    return list(units.items())


def _parse_slow(blob: bytes, name: str) -> tuple[pa.Table, list]:
    """Parse one file with :mod:`json`, checking every value against ``RESULT_SCHEMA``."""
    columns: dict[str, list] = {f.name: [] for f in RESULT_SCHEMA}
    units = []
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
        for field in RESULT_SCHEMA:
            columns[field.name].append(_coerce(record.get(field.name), field, where))
        try:
            units.append(_units_items(record.get("units_removed")))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return pa.table(columns, schema=RESULT_SCHEMA), units


def _coerce(value: object, field: pa.Field, where: str) -> object:
    t = field.type
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
    raise ValueError(f"{where}: {field.name}: must be {t}, got {value!r}")
