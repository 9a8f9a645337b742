"""Adapter: write the Optuna mirror's trials into ``<study>/optuna.db`` (Optuna's RDB storage on
SQLite). What the trials hold is decided in :mod:`orchestrator.optuna_mirror.mirror`; this module only
translates them to Optuna and keeps the file equal to them.

:func:`write_mirror` makes the file hold exactly the given trials, with as little writing as it
can, so calling it twice changes nothing the second time:

- when every trial already in the file is one of the given trials, unchanged (the usual case
  while a study runs), the missing ones are appended (``Study.add_trials``; each is one SQLite
  transaction, so a reader never sees half a trial);
- otherwise (a trial changed or left Tune's state: a resumed failed seed, a suggestion Tune
  re-made under new ids after a crash; a file from another study, another schema or garbage),
  the study is rebuilt in memory and copied over the file with SQLite's online backup, in one
  write transaction: readers, optuna-dashboard included, see the old study or the new one, under
  the same study id. A file that cannot be read as this study's mirror is replaced instead
  (written beside it, then renamed).

Identity: a trial is known by its first Tune trial id (user attr ``tune_trial_ids[0]``).
Compared: state, value, params with distributions, user attrs and datetimes; system attrs are
not (optuna-dashboard keeps its notes there), and neither are trial numbers.

SQLite needs a local file: on any other filesystem (``s3://``, ``gs://``) the file is copied to a
temporary local directory, updated there and, when it changed, uploaded whole with
:func:`results.tables.storage.write_bytes` (one object write: readers see the old or the new file).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import posixpath
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from results.tables import storage
from results.tables.storage import OPTUNA_DB

KEY_ATTR = "tune_trial_ids"  # a trial's identity: the first of them


@dataclass(frozen=True)
class MirrorStudy:
    """The Optuna study a mirror holds: its name, direction, searched fields and study attrs."""

    name: str  # the prunetune study's name
    direction: str  # "maximize" | "minimize"
    distributions: tuple[tuple[str, str, tuple[Any, ...]], ...]  # OptunaPlan.distributions
    user_attrs: tuple[tuple[str, Any], ...] = ()  # JSON values, set on the study


@dataclass(frozen=True)
class MirrorTrial:
    """One Optuna trial of the mirror. ``value`` None means FAIL, else COMPLETE; times are Unix
    seconds; ``user_attrs[KEY_ATTR][0]`` is its identity."""

    params: dict[str, Any]  # spec path -> value
    value: float | None
    start_s: float
    end_s: float
    user_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.user_attrs[KEY_ATTR][0]


@dataclass(frozen=True)
class Written:
    """What :func:`write_mirror` did."""

    trials: int  # trials the file holds now
    added: int  # trials appended (or all of them, when rebuilt or created)
    rebuilt: bool  # existing content was replaced (a trial changed or left Tune's state)
    created: bool  # the file did not exist (or was not a readable mirror)


class Memo:
    """What :func:`write_mirror` last left in local files, so that a caller writing often (the
    Tune Callback) need not read the whole study back each time (reading is the slow part:
    about 5 ms a trial). It is trusted only while the file is untouched since: same inode, size
    and modification time."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[MirrorStudy, tuple[int, int, int], list]] = {}

    def recall(self, path: str, study: MirrorStudy) -> list | None:
        kept = self._files.get(path)
        if kept is None or kept[0] != study or kept[1] != _signature(path):
            return None
        return kept[2]

    def keep(self, path: str, study: MirrorStudy, trials: list) -> None:
        self._files[path] = (study, _signature(path), trials)


def write_mirror(
    fs: pafs.FileSystem,
    study_path: str,
    study: MirrorStudy,
    trials: Sequence[MirrorTrial],
    memo: Memo | None = None,
) -> Written:
    """Make ``<study_path>/optuna.db`` hold `study` with exactly `trials`, numbered in the given
    order (appended trials follow the ones already there). `memo` (local files only) saves
    reading the file back when this process wrote it last."""
    path = posixpath.join(study_path, OPTUNA_DB)
    if isinstance(fs, pafs.LocalFileSystem):
        return _sync_file(path, study, trials, memo or Memo())
    with tempfile.TemporaryDirectory(prefix="prunetune-optuna-") as tmp:
        local = os.path.join(tmp, OPTUNA_DB)
        try:
            with fs.open_input_stream(path) as src, open(local, "wb") as dst:
                dst.write(src.readall())
        except FileNotFoundError:
            pass
        written = _sync_file(local, study, trials, Memo())
        if written.added or written.rebuilt or written.created:
            with open(local, "rb") as f:
                storage.write_bytes(fs, path, f.read())
        return written


def storage_url(path: str) -> str:
    """The SQLAlchemy URL of a local SQLite file (what ``optuna.load_study`` takes)."""
    return f"sqlite:///{os.path.abspath(path)}"


def _sync_file(path: str, study: MirrorStudy, trials: Sequence[MirrorTrial], memo: Memo) -> Written:
    with _quiet_optuna():
        desired = _frozen_trials(trials, study)
        current = memo.recall(path, study)
        if current is None:
            current = _read(path, study)
        written = None
        if current is not None:
            new = _missing(current, desired)
            if new is not None:
                if new:
                    with _open_study(storage_url(path), study.name) as (opened, _):
                        opened.add_trials(new)
                written = Written(len(desired), len(new), False, False)
        if written is None:
            _rebuild(path, study, desired, in_place=current is not None)
            written = Written(len(desired), len(desired), current is not None, current is None)
        memo.keep(path, study, desired)
        return written


def _read(path: str, study: MirrorStudy) -> list | None:
    """The trials of the file's study; None when the file is absent or is not this study's
    mirror (other studies, direction or attrs; another schema; not a database)."""
    import optuna
    import sqlalchemy.exc

    if not os.path.exists(path):
        return None
    try:
        with _open_study(storage_url(path), study.name) as (opened, names):
            if (
                names != [study.name]
                or opened.direction.name.lower() != study.direction
                or opened.user_attrs != dict(study.user_attrs)
            ):
                return None
            return opened.get_trials(deepcopy=False)
    except (
        KeyError,
        RuntimeError,
        ValueError,
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.OptunaError,
    ):
        return None  # rebuilt from Tune's state, the source of truth


def _missing(current: list, desired: list) -> list | None:
    """The desired trials the file lacks, in order; None when a rebuild is needed (a trial of
    the file is not desired as it is, or appears twice)."""
    wanted = {t.user_attrs[KEY_ATTR][0]: t for t in desired}
    seen = set()
    for trial in current:
        keys = trial.user_attrs.get(KEY_ATTR)
        key = keys[0] if isinstance(keys, list) and keys else None
        if key in seen or key not in wanted or not _same(trial, wanted[key]):
            return None
        seen.add(key)
    return [t for t in desired if t.user_attrs[KEY_ATTR][0] not in seen]


def _same(a: Any, b: Any) -> bool:
    return (
        a.state == b.state
        and a.values == b.values
        and a.params == b.params
        and a.distributions == b.distributions
        and a.user_attrs == b.user_attrs
        and a.datetime_start == b.datetime_start
        and a.datetime_complete == b.datetime_complete
    )


def _rebuild(path: str, study: MirrorStudy, desired: list, in_place: bool) -> None:
    """Build the study in an in-memory SQLite database, then copy it over `path` in one
    transaction (`in_place`) or into a new file renamed onto `path`."""
    import optuna
    from sqlalchemy.pool import StaticPool

    memory = optuna.storages.RDBStorage(
        "sqlite://",  # one shared in-memory connection, then SQLite's backup copies it out
        engine_kwargs={"poolclass": StaticPool, "connect_args": {"check_same_thread": False}},
    )
    try:
        built = optuna.create_study(
            storage=memory, study_name=study.name, direction=study.direction
        )
        for key, value in study.user_attrs:
            built.set_user_attr(key, value)
        built.add_trials(desired)
        raw = memory.engine.raw_connection()
        try:
            if in_place:
                _backup(raw.driver_connection, path)
            else:
                _backup_new(raw.driver_connection, path)
        finally:
            raw.close()
    finally:
        memory.engine.dispose()


def _signature(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _backup(source: sqlite3.Connection, path: str) -> None:
    target = sqlite3.connect(path, timeout=30)  # waits for a reader's lock to go
    try:
        source.backup(target)  # pages=-1: the whole database in one step, one transaction
    finally:
        target.close()


def _backup_new(source: sqlite3.Connection, path: str) -> None:
    storage.replace_local(path, lambda tmp: _backup(source, tmp))


def _frozen_trials(trials: Sequence[MirrorTrial], study: MirrorStudy) -> list:
    """Optuna FrozenTrials of the mirror trials (numbers and ids are the storage's to assign)."""
    from optuna.trial import FrozenTrial, TrialState

    from search_spaces.optuna_space import optuna_distributions

    dists = optuna_distributions(study.distributions)
    return [
        FrozenTrial(
            number=0,
            state=TrialState.FAIL if t.value is None else TrialState.COMPLETE,
            value=t.value,
            datetime_start=datetime.datetime.fromtimestamp(t.start_s),
            datetime_complete=datetime.datetime.fromtimestamp(t.end_s),
            params=dict(t.params),
            distributions=dict(dists),
            user_attrs=dict(t.user_attrs),
            system_attrs={},
            intermediate_values={},
            trial_id=0,
        )
        for t in trials
    ]


@contextlib.contextmanager
def _open_study(url: str, name: str) -> Iterator[tuple[Any, list[str]]]:
    """An existing study of a SQLite file and the names of every study there; the engine is
    disposed afterwards (no handle kept: the file may be replaced or uploaded next)."""
    import optuna

    rdb = optuna.storages.RDBStorage(url)
    try:
        names = optuna.get_all_study_names(storage=rdb)
        yield optuna.load_study(study_name=name, storage=rdb), names
    finally:
        rdb.engine.dispose()


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "A new study created" lines: the mirror is not the user's Optuna session."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
