"""The Parquet schemas of a study's derived tables, and their file metadata.

Five tables, one file each in the study directory (column meanings: ``results/README.md``):

- ``trials.parquet``: one row per trial (after de-duplication by ``trial_key``);
- ``epochs.parquet``: one row per (trial, epoch), the latest report of that epoch;
- ``events.parquet``: one row per (trial, pruning event);
- ``layer_events.parquet``: one row per (trial, event epoch, layer) the event touched;
- ``fits.parquet``: one row per (fit, x, y, level, grouping, group) correlation fit.

Nothing here lists a record key by hand: the epoch columns are :data:`trainables.records.RECORD`
(each key's type tag mapped by :func:`arrow_type`) plus the Tune keys of :data:`TUNE_STORED`; the
per-trial record keys (``RecordField.per_trial``: pruning rate, device, torch version, ...) are
trials columns too; the trials columns are typed once in :mod:`trainables.trial_columns`.
Every file carries ``prunetune.schema_version``, ``prunetune.version``, ``prunetune.spec_hash``
and ``prunetune.table`` in its schema metadata.
"""

from __future__ import annotations

from importlib import metadata

import pyarrow as pa

from trainables.records import RECORD, Type
from trainables.trial_columns import CONFIG_COLUMNS, TRIAL_COLUMNS

# 4: the per-trial record keys in trials.parquet; 5: an IMP event epoch's row is the level's
# trained model (before the prune; trainables.records.measured_before_event), every event
# records test_loss_after and sparsity_after, and each event its pruned_score; trials tic; fits
# panel.
SCHEMA_VERSION = "5"

_SCALARS = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def arrow_type(tag: Type) -> pa.DataType:
    """The pyarrow type of a ``trainables.records`` type tag."""
    if isinstance(tag, str):
        return _SCALARS[tag]
    kind, arg = tag
    if kind == "list":
        return pa.list_(arrow_type(arg))
    return pa.struct([pa.field(name, arrow_type(t)) for name, t in arg])


# Keys Ray Tune adds to every reported result: the ones stored in epochs.parquet, and the ones
# read past (Tune 2.60's JsonLoggerCallback; a newer Tune may add more, see results.tables.history).
TUNE_STORED: tuple[tuple[str, pa.DataType], ...] = (
    ("time_total_s", pa.float64()),
    ("training_iteration", pa.int64()),
    ("hostname", pa.string()),
    ("node_ip", pa.string()),
)
TUNE_IGNORED: frozenset[str] = frozenset(
    {
        "config",
        "timestamp",
        "checkpoint_dir_name",
        "should_checkpoint",
        "done",
        "trial_id",
        "date",
        "time_this_iter_s",
        "pid",
        "time_since_restore",
        "iterations_since_restore",
        "experiment_tag",
    }
)

# Every column of a result line that is read: the record's keys, then Tune's.
RESULT = pa.schema(
    [pa.field(f.name, arrow_type(f.type)) for f in RECORD]
    + [pa.field(n, t) for n, t in TUNE_STORED]
)
# Record keys that go to events.parquet / layer_events.parquet instead of epochs.parquet
# (per-layer lists).
EVENT_ONLY = ("units_removed", "windows_closed")
UNITS_BY_LAYER = pa.map_(pa.string(), pa.int64())

_ID_FIELDS = [pa.field("trial_id", pa.string()), pa.field("trial_key", pa.string())]

EPOCHS = pa.schema(_ID_FIELDS + [f for f in RESULT if f.name not in EVENT_ONLY])

EVENTS = pa.schema(
    _ID_FIELDS
    + [
        pa.field("epoch", pa.int64()),
        pa.field("acc_before", pa.float64()),
        pa.field("acc_after", pa.float64()),
        pa.field("instability", pa.float64()),
        pa.field("units_removed", pa.int64()),  # total over layers
        pa.field("units_removed_by_layer", UNITS_BY_LAYER),
        pa.field("sparsity", pa.float64()),
        pa.field("imp_round", pa.int64()),
    ]
)

# One row per (trial, event epoch, layer): the units_removed entries of the event's record, joined
# with the windows_closed entry (of the epoch the window closed) of a perturbation window.
LAYER_EVENTS = pa.schema(
    _ID_FIELDS
    + [
        pa.field("epoch", pa.int64()),  # the event's epoch
        pa.field("layer", pa.string()),
        pa.field("units", pa.int64()),  # removed (pruning) or targeted (perturbation)
        pa.field("window_steps", pa.int64()),
        pa.field("closed_by", pa.string()),  # duration | own_event | trial_end
        pa.field("closed_epoch", pa.int64()),
        pa.field("noise_draws_train", pa.int64()),
        pa.field("noise_draws_eval", pa.int64()),
    ]
)

# trials.parquet: identity and outcome columns first, then the flattened TrialConfig; both lists
# are typed once in trainables.trial_columns.
TRIAL_FIELDS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (name, arrow_type(tag)) for name, tag in TRIAL_COLUMNS
)

FITS = pa.schema(
    [
        pa.field("fit", pa.string()),  # "default", or the name of a spec's fit
        pa.field("include", pa.list_(pa.string())),  # trial kinds: pruned, unpruned, scratch
        # the where clauses (a trial passing any one is kept): column -> values, as text
        pa.field("where", pa.list_(pa.map_(pa.string(), pa.list_(pa.string())))),
        pa.field("group_by", pa.string()),  # the trials column grouped by; null when pooled
        pa.field("x", pa.string()),
        pa.field("y", pa.string()),
        pa.field("level", pa.string()),  # trial | config
        pa.field("grouping", pa.string()),  # all | target | model | dataset | a group_by column
        pa.field("group", pa.string()),  # "all" or the group's value
        pa.field("panel", pa.string()),  # the report panel drawing this row; null = none
        pa.field("n", pa.int64()),
        *[
            pa.field(name, pa.float64())
            for method, stat in (("pearson", "r"), ("kendall", "tau"), ("spearman", "rho"))
            for name in (f"{method}_{stat}", f"{method}_p", f"{method}_ci_low", f"{method}_ci_high")
        ],
        *[
            pa.field(f"{coef}{suffix}", pa.float64())
            for coef in ("slope", "intercept")
            for suffix in ("", "_stderr", "_ci_low", "_ci_high")
        ],
        *[
            pa.field(f"partial_{part}_{control}", t)
            for control in ("sparsity", "train_acc")
            for part, t in (
                ("n", pa.int64()),
                ("r", pa.float64()),
                ("p", pa.float64()),
                ("ci_low", pa.float64()),
                ("ci_high", pa.float64()),
            )
        ],
        pa.field("n_excluded", pa.int64()),
        pa.field("excluded", pa.map_(pa.string(), pa.int64())),  # reason -> trials
        pa.field("n_resamples", pa.int64()),
        pa.field("random_state", pa.int64()),
        pa.field("confidence_level", pa.float64()),
    ]
)

# (column name, path in TrialConfig.to_dict(), arrow type), in order.
CONFIG_FIELDS: tuple[tuple[str, tuple[str, ...], pa.DataType], ...] = tuple(
    (name, path, arrow_type(tag)) for name, path, tag in CONFIG_COLUMNS
)
TRIALS = pa.schema(
    [pa.field(n, t) for n, t in TRIAL_FIELDS] + [pa.field(n, t) for n, _, t in CONFIG_FIELDS]
)
SCHEMAS: dict[str, pa.Schema] = {
    "trials": TRIALS,
    "epochs": EPOCHS,
    "events": EVENTS,
    "layer_events": LAYER_EVENTS,
    "fits": FITS,
}


def prunetune_version() -> str:
    """The installed prunetune distribution's version ("unknown" when it is not installed)."""
    try:
        return metadata.version("prunetune")
    except metadata.PackageNotFoundError:
        return "unknown"


def with_metadata(schema: pa.Schema, table: str, spec_hash: str) -> pa.Schema:
    """`schema` carrying the file metadata every prunetune table has (all values are strings)."""
    return schema.with_metadata(
        {
            "prunetune.table": table,
            "prunetune.schema_version": SCHEMA_VERSION,
            "prunetune.version": prunetune_version(),
            "prunetune.spec_hash": spec_hash,
        }
    )
