"""Every key the trainable records reaches a table, and every table column has a producer.

The record is defined once (``trainables.records.RECORD``); the Parquet schemas are built from
it. This ties the two both ways, so a new record key can never be dropped on the way to Parquet
(as ``num_events`` once was) and a column can never be declared that nothing fills.
"""

from __future__ import annotations

from results.tables import schema
from results.tables.summarize import INPUT_KEYS
from trainables.records import PER_TRIAL_KEYS, RECORD, RECORD_KEYS

ID_COLUMNS = {"trial_id", "trial_key"}
TUNE_COLUMNS = {name for name, _ in schema.TUNE_STORED}
# Where a record key that is not an epochs column lands instead.
ELSEWHERE = {
    "units_removed": ("events", "units_removed_by_layer"),
    "windows_closed": ("layer_events", "closed_by"),
}


def test_every_record_key_lands_in_a_table():
    epochs = set(schema.EPOCHS.names)
    for field in RECORD:
        if field.name in epochs:
            assert schema.EPOCHS.field(field.name).type == schema.arrow_type(field.type)
            continue
        assert field.name in ELSEWHERE, f"record key {field.name!r} is stored in no table"
        table, column = ELSEWHERE[field.name]
        assert column in schema.SCHEMAS[table].names


def test_every_epochs_column_has_a_producer():
    for name in schema.EPOCHS.names:
        assert name in RECORD_KEYS or name in ID_COLUMNS | TUNE_COLUMNS, (
            f"epochs.parquet column {name!r} has no producer (not a record key, id or Tune key)"
        )


def test_num_events_is_stored():
    assert "num_events" in RECORD_KEYS and "num_events" in schema.EPOCHS.names


def test_every_record_field_says_what_it_is():
    for field in RECORD:
        assert field.meaning and isinstance(field.always, bool), field.name
        schema.arrow_type(field.type)  # a known type tag


def test_every_per_trial_key_is_also_a_trials_column_read_from_the_epochs():
    """A per-trial fact (pruning rate, where the trial ran) is one trials.parquet column, typed
    as the record declares it, that results.tables.summarize fills from the epochs it reads."""
    assert {"device", "torch_version", "threads", "n_params", "n_prunable"} <= set(PER_TRIAL_KEYS)
    trials = dict(schema.TRIAL_FIELDS)
    for field in RECORD:
        if field.per_trial:
            assert trials.get(field.name) == schema.arrow_type(field.type), field.name
            assert field.name in INPUT_KEYS and field.name in schema.EPOCHS.names
    assert schema.TRIALS.names.count("pruning_rate") == 1
