"""Parsing result.json lines: fast and checked paths agree; partial lines; re-reported epochs."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from synthetic import history
from tune_fixture import config

from results.tables import history as H


def _blobs():
    pruned, base = config("largest", 1), config(None, 0)
    return [history(pruned, "a"), b"", history(base, "b")]


def test_fast_path_equals_the_checked_json_path():
    blobs = _blobs()
    fast = H.parse_histories(blobs)
    slow = pa.concat_tables([H._parse_slow(b, "f") for b in blobs])
    assert fast.drop_columns(["source"]).equals(slow)
    assert fast.column("source").to_pylist() == [0] * 6 + [2] * 6


def test_units_removed_survive_as_per_layer_lists():
    table = H.parse_histories([history(config("smallest", 0), "a")])
    events = [u for u in table.column("units_removed").to_pylist() if u is not None]
    per_event = [{"layer": "conv1", "units": 4}, {"layer": "conv2", "units": 2}]
    assert events == [per_event, per_event]
    assert table.column("is_event").to_pylist() == [False, True, False, True, False, False]


def test_unknown_keys_are_read_past_but_an_error_when_strict():
    line = json.dumps({"epoch": 1, "config": {"trial": {"a": 1}}, "brand_new_key": 2.0})
    blob = (line + "\n").encode()
    assert H.parse_histories([blob], strict=False).column("epoch").to_pylist() == [1]
    with pytest.raises(ValueError, match="line 1: unknown result key 'brand_new_key'"):
        H.parse_histories([blob], ["r.json"], strict=True)
    assert H.parse_histories([history(config("largest", 0), "a")], strict=True).num_rows == 6


def test_nan_values_and_a_partial_last_line():
    cfg = config("random", 0)
    blob = history(cfg, "a", epochs=[0, 1], last={"train_loss": float("nan"), "status": "diverged"})
    assert b"NaN" in blob
    table = H.parse_histories([blob + b'{"epoch": 2, "train_lo'])
    assert table.num_rows == 2
    assert table.column("status").to_pylist() == ["running", "diverged"]
    assert table.column("train_loss").to_pylist()[1] != table.column("train_loss").to_pylist()[1]


def test_odd_values_fall_back_to_the_checked_path_and_bad_ones_name_file_and_line():
    good = json.dumps({"epoch": 3.0, "is_event": 1, "test_acc": 1}) + "\n\n"
    table = H.parse_histories([good.encode()])
    assert table.column("epoch").to_pylist() == [3]
    assert table.column("is_event").to_pylist() == [True]
    bad = json.dumps({"epoch": 0}) + "\n" + json.dumps({"epoch": "two"}) + "\n"
    with pytest.raises(ValueError, match=r"trial-x/result.json: line 2: epoch: must be int64"):
        H.parse_histories([bad.encode()], ["trial-x/result.json"])


def test_latest_report_of_each_epoch_wins():
    cfg = config("largest", 0)
    first = history(cfg, "a", epochs=[0, 1, 2, 3])
    resumed = history(cfg, "a", epochs=[2, 3], last={"test_acc": 0.123, "epoch_time_s": 9.0})
    resumed += history(cfg, "a", epochs=[4])
    table = H.latest_per_epoch(H.parse_histories([first + resumed, history(cfg, "b")]))
    rows = [
        (s, e)
        for s, e in zip(
            table.column("source").to_pylist(), table.column("epoch").to_pylist(), strict=True
        )
    ]
    assert rows == [(0, e) for e in range(5)] + [(1, e) for e in range(6)]
    assert table.column("test_acc").to_pylist()[3] == 0.123  # re-reported epoch 3: the later line
    assert table.column("epoch_time_s").to_pylist()[:5] == [0.01, 0.01, 0.01, 9.0, 0.01]
    assert table.num_rows == 11
