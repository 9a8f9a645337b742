"""layer_events.parquet: one row per (trial, event epoch, layer), perturbation windows joined in.

Records go through the real path: result.json lines -> pyarrow's JSON reader with the explicit
schema -> build_tables.
"""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
import synthetic as S
from tune_fixture import config, expected_record

from results.api import write_tables
from results.tables import schema, storage
from trainables.config import PerturbationConfig


def _window(layer, event_epoch, steps, closed_by, evals=1):
    return {
        "layer": layer,
        "event_epoch": event_epoch,
        "window_steps": steps,
        "closed_by": closed_by,
        "noise_draws_train": steps,
        "noise_draws_eval": evals,
    }


# The fixture's schedule: conv1 and conv2 both have events at epochs 1 and 3 (6 epochs).
CLOSES = {
    2: [_window("conv1", 1, 7, "duration")],
    3: [_window("conv2", 1, 12, "own_event", 9)],
    5: [_window("conv1", 3, 7, "duration"), _window("conv2", 3, 20, "trial_end", 4)],
}


def _noise_config(seed: int):
    cfg = config("largest", seed)
    pert = PerturbationConfig(mode="zeroing", steps=7)
    return dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, perturbation=pert))


def _blob(cfg, tid: str, epochs: list[int]) -> bytes:
    lines = []
    for epoch in epochs:
        rec = expected_record(cfg, epoch)
        rec.update(sparsity=0.0, windows_closed=CLOSES.get(epoch))
        lines.append(S.result_line(cfg, tid, rec, epoch + 1))
    return b"".join(lines)


@pytest.fixture(scope="module")
def tables():
    pruned, noisy, running = config("smallest", 0), _noise_config(0), _noise_config(1)
    trials = [
        S.tune_trial(pruned, "p0"),
        S.tune_trial(noisy, "n0"),
        S.tune_trial(running, "n1", status="RUNNING"),
    ]
    resumed = _blob(noisy, "n0", [0, 1, 2, 3]) + _blob(noisy, "n0", [2, 3, 4, 5])
    blobs = [S.history(pruned, "p0"), resumed, _blob(running, "n1", [0, 1, 2, 3])]
    return S.tables(trials, blobs)


def _rows(table, tid: str) -> list[tuple]:
    keep = ("epoch", "layer", "units", "window_steps", "closed_by", "closed_epoch")
    return [
        tuple(r[k] for k in keep) + (r["noise_draws_train"], r["noise_draws_eval"])
        for r in table.to_pylist()
        if r["trial_id"] == tid
    ]


def test_plain_pruning_rows_have_units_and_no_window(tables):
    rows = _rows(tables.layer_events, "p0")
    units = {(e, layer): u for e, layer, u, *_ in rows}
    rec1 = expected_record(config("smallest", 0), 1)["units_removed"]
    assert [(1, u["layer"], u["units"]) for u in rec1] == [(e, la, u) for e, la, u, *_ in rows[:2]]
    assert sorted(units) == [(1, "conv1"), (1, "conv2"), (3, "conv1"), (3, "conv2")]
    assert all(r[3:] == (None,) * 5 for r in rows)


def test_windows_join_their_event_rows_once_after_a_resume(tables):
    rows = _rows(tables.layer_events, "n0")
    # the same schedule as p0's, so the same units
    u = {(e, la): n for e, la, n, *_ in _rows(tables.layer_events, "p0")}
    assert rows == [
        (1, "conv1", u[1, "conv1"], 7, "duration", 2, 7, 1),
        (1, "conv2", u[1, "conv2"], 12, "own_event", 3, 12, 9),
        (3, "conv1", u[3, "conv1"], 7, "duration", 5, 7, 1),
        (3, "conv2", u[3, "conv2"], 20, "trial_end", 5, 20, 4),
    ]


def test_a_window_still_open_in_a_running_trial_is_null(tables):
    rows = _rows(tables.layer_events, "n1")
    assert [r[:2] for r in rows] == [(1, "conv1"), (1, "conv2"), (3, "conv1"), (3, "conv2")]
    assert rows[2][3:] == (None,) * 5 and rows[1][4] == "own_event"


def test_schema_metadata_and_file(tables, tmp_path):
    table = tables.layer_events
    assert table.schema.equals(schema.SCHEMAS["layer_events"])
    assert table.schema.metadata[b"prunetune.table"] == b"layer_events"
    assert "windows_closed" not in tables.epochs.column_names
    assert "layer_events" in storage.TABLES
    fs, path = storage.resolve(str(tmp_path))
    write_tables(fs, path, {"layer_events": table})
    assert pq.read_table(tmp_path / "layer_events.parquet").equals(table)


def test_imp_epochs_events_and_layer_events_agree_on_each_model():
    """An IMP event epoch: the epochs row and the event's acc_before are the level's trained
    model (at the sparsity it trained at); events' acc_after and sparsity are the pruned model;
    the layer_events rows of that epoch are the weights the prune removed, i.e. the difference of
    the two sparsities."""
    tables = S.imp_study(seeds=1)
    epochs = {(r["trial_id"], r["epoch"]): r for r in tables.epochs.to_pylist()}
    removed: dict[tuple, int] = {}
    for r in tables.layer_events.to_pylist():
        key = (r["trial_id"], r["epoch"])
        removed[key] = removed.get(key, 0) + r["units"]
    events = tables.events.to_pylist()
    assert {e["trial_id"] for e in events} == {"none0", "sparse_from_start0"}
    for e in events:
        row = epochs[e["trial_id"], e["epoch"]]
        assert e["acc_before"] == row["test_acc"] and e["acc_after"] < row["test_acc"]
        assert e["sparsity"] == row["sparsity_after"]
        reinit = e["imp_round"] == S.IMP_ROUNDS  # sparse_from_start: the final mask, from 0
        before = 0.0 if reinit else row["sparsity"]
        assert removed[e["trial_id"], e["epoch"]] == e["units_removed"]
        assert e["units_removed"] == round(S.IMP_WEIGHTS * (e["sparsity"] - before))
    assert [e["sparsity"] for e in events if e["trial_id"] == "none0"] == pytest.approx([0.2, 0.36])
