"""Tables from Tune trials (the layer below the Ray adapter): rows, dedupe, gain, schema, files."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import synthetic as S
from tune_fixture import config, expected_record

from results.api import export_study, write_tables
from results.tables import schema, storage
from results.tables.export import build_tables
from results.tables.history import parse_histories
from trainables.errors import UserError
from trainables.identity import config_key, trial_config, trial_key
from trainables.records import FIELDS


def _case():
    """Baselines (2 seeds), pruned trials, an orphan pair, a re-run, no-baseline, unfinished."""
    b0, b1 = config(None, 0), config(None, 1)
    s0, l1, r0 = config("smallest", 0), config("largest", 1), config("random", 0)
    lonely = config("smallest", 0, lr=5e-3)
    trials = [
        S.tune_trial(b0, "t0"),
        S.tune_trial(b1, "t1"),
        S.tune_trial(s0, "t2"),
        S.tune_trial(l1, "t3"),
        S.tune_trial(r0, "t4", status="ERROR", error="boom"),  # orphan: r0 again below, ok
        S.tune_trial(r0, "t5"),
        S.tune_trial(lonely, "t6"),
        S.tune_trial(config("largest", 2), "t7", status="PENDING"),  # started, interrupted
        S.tune_trial(config("random", 2), "t8", status="PENDING"),  # never started
    ]
    rerun = S.history(l1, "t3", epochs=[0, 1, 2, 3]) + S.history(l1, "t3", epochs=[2, 3, 4, 5])
    blobs = [
        S.history(b0, "t0"),
        S.history(b1, "t1"),
        S.history(s0, "t2"),
        rerun,
        S.history(r0, "t4", epochs=[0]),
        S.history(r0, "t5"),
        S.history(lonely, "t6"),
        S.history(config("largest", 2), "t7", epochs=[0, 1]),
        b"",
    ]
    return trials, blobs


@pytest.fixture(scope="module")
def tables():
    trials, blobs = _case()
    return S.tables(trials, blobs)


def test_one_row_per_trial_key_keeping_the_most_complete(tables):
    t = tables.trials
    assert t.column("trial_id").to_pylist() == ["t0", "t1", "t2", "t3", "t5", "t6", "t7", "t8"]
    assert tables.n_duplicates == 1  # t4 (error) folded into t5 (ok), same config
    status = dict(
        zip(t.column("trial_id").to_pylist(), t.column("status").to_pylist(), strict=True)
    )
    assert status == {
        "t0": "ok", "t1": "ok", "t2": "ok", "t3": "ok", "t5": "ok", "t6": "ok",
        "t7": "running", "t8": "pending",
    }  # fmt: skip
    keys = t.column("trial_key").to_pylist()
    assert len(set(keys)) == len(keys)


def test_epochs_once_per_trial_and_epoch_with_events_split_out(tables):
    e = tables.epochs
    pairs = list(zip(e.column("trial_id").to_pylist(), e.column("epoch").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 6 * 6 + 2  # six finished trials, t7 has two epochs
    t3 = [p for p in pairs if p[0] == "t3"]
    assert [ep for _, ep in t3] == list(range(6))
    ev = tables.events
    assert ev.num_rows == sum(e.column("is_event").to_pylist())
    first = ev.slice(0, 1).to_pylist()[0]
    cfg = config("smallest", 0)
    rec = expected_record(cfg, first["epoch"])
    assert first["trial_id"] == "t2" and first["units_removed"] == rec["units_removed_total"]
    assert first["units_removed_by_layer"] == [
        (u["layer"], u["units"]) for u in rec["units_removed"]
    ]
    assert first["instability"] == pytest.approx(rec["instability"])


def test_outcomes_gain_and_matching(tables):
    rows = {r["trial_id"]: r for r in tables.trials.to_pylist()}
    base = np.mean([rows["t0"]["generalization"], rows["t1"]["generalization"]])
    assert rows["t2"]["gain"] == pytest.approx(rows["t2"]["generalization"] - base)
    assert rows["t2"]["n_baselines"] == 2
    assert rows["t6"]["gain"] is None and rows["t6"]["n_baselines"] == 0
    assert rows["t7"]["generalization"] is None and rows["t7"]["n_epochs"] == 2
    assert rows["t0"]["mean_instability"] == 0.0 and rows["t0"]["is_baseline"]
    assert rows["t3"]["pruning_rate"] == pytest.approx(25.0)  # 0.5 of conv1 over 2 events
    assert rows["t2"]["hessian_topk_sum"] == pytest.approx(100.0 - 200 * 0.02)
    assert rows["t2"]["pruning_target"] == "smallest"
    assert rows["t2"]["pruning_layers"][0] == {
        "name": "conv1", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 3,
    }  # fmt: skip
    assert rows["t2"]["generalization_measure"] == "best_after_last_event"
    assert rows["t0"]["config_key"] == rows["t1"]["config_key"] != rows["t2"]["config_key"]
    fits = S.fits(tables)
    pooled = [
        r
        for r in fits.to_pylist()
        if (r["y"], r["level"], r["grouping"]) == ("gain", "trial", "all")
    ]
    assert dict(pooled[0]["excluded"]) == {"no_baseline": 1, "incomplete": 2}
    assert pooled[0]["n"] == 3


def test_schemas_and_file_metadata(tables):
    for name, table in (
        ("trials", tables.trials),
        ("epochs", tables.epochs),
        ("events", tables.events),
    ):
        assert table.schema.equals(schema.SCHEMAS[name])
        meta = table.schema.metadata
        assert meta[b"prunetune.table"] == name.encode()
        assert meta[b"prunetune.schema_version"] == schema.SCHEMA_VERSION.encode()
        assert meta[b"prunetune.spec_hash"] == b"feedface"
        assert meta[b"prunetune.version"] == schema.prunetune_version().encode()
    assert S.fits(tables).schema.equals(schema.FITS)


def test_identity_keys_match_trainables_for_every_seed():
    for seed in (0, 1, 17):
        cfg = config("largest", seed)
        tune_config = {"trial": cfg.to_dict(), "checkpoint_frequency": 1}
        table = build_tables([S.tune_trial(cfg, "x")], parse_histories([b""]), "h").trials
        assert table.column("trial_key").to_pylist() == [trial_key(cfg)]
        assert table.column("config_key").to_pylist() == [config_key(config("largest", 0))]
        assert trial_config(tune_config) == cfg


def test_repeater_seed_comes_from_the_seed_list():
    cfg = config("largest", 0)
    resolved = trial_config({"trial": cfg.to_dict(), "seeds": [11, 12, 13], "__trial_index__": 2})
    assert resolved == dataclasses.replace(cfg, seed=13)


def test_a_config_that_does_not_parse_names_the_trial():
    bad = S.tune_trial(config(None, 0), "t9")
    bad.config["trial"]["pruning"]["target"] = "biggest"
    with pytest.raises(UserError, match=r"trials/t9: config\['trial'\]: pruning.target"):
        build_tables([bad], parse_histories([b""]), "h")


def test_writes_are_atomic_idempotent_and_work_on_uris(tables, tmp_path):
    local = tmp_path / "local"
    uri = tmp_path / "uri"
    local.mkdir(), uri.mkdir()
    named = {"trials": tables.trials, "epochs": tables.epochs, "events": tables.events}
    for target in (str(local), f"file://{uri}"):
        fs, path = storage.resolve(target)
        write_tables(fs, path, named)
    first = {p: (local / p).read_bytes() for p in os.listdir(local)}
    fs, path = storage.resolve(str(local))
    write_tables(fs, path, named)
    assert {p: (local / p).read_bytes() for p in os.listdir(local)} == first  # byte-identical
    assert sorted(os.listdir(local)) == ["epochs.parquet", "events.parquet", "trials.parquet"]
    assert pq.read_table(uri / "trials.parquet").equals(tables.trials)


def test_export_refuses_what_is_not_a_study(tmp_path):
    with pytest.raises(UserError, match="not found"):
        export_study(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="study.json missing"):
        export_study(str(tmp_path))
    (tmp_path / "study.json").write_text(json.dumps({"name": "s", "spec_hash": "h"}))
    with pytest.raises(UserError, match="no Ray Tune experiment"):
        export_study(str(tmp_path))
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        export_study(str(tmp_path))


def test_export_fits_what_the_stored_spec_yaml_asks_for(tmp_path, monkeypatch):
    """`prunetune aggregate` fits the defaults plus the fits of the study's own spec.yaml."""
    from results import api
    from results.tables.snapshot import TuneStudy

    tables = S.tables(*S.study_inputs(n_per_target=3))
    (tmp_path / "study.json").write_text(json.dumps({"name": "s", "spec_hash": "h"}))
    spec = "# spec-hash: h\nname: s\nfits:\n  - {name: per_target, group_by: pruning.target}\n"
    (tmp_path / "spec.yaml").write_text(spec)

    def built(study_dir):
        meta = storage.read_meta(*storage.resolve(study_dir), study_dir)
        return api.StudyTables(meta, TuneStudy(("trials",), (), ()), tables)

    monkeypatch.setattr(api, "study_tables", built)
    export_study(str(tmp_path), S.FAST_PLAN)
    fits = pq.read_table(tmp_path / "fits.parquet").to_pylist()
    named = [(r["fit"], r["level"], r["group"]) for r in fits if not r["fit"].startswith("default")]
    assert named == [
        ("per_target", level, target)
        for level in ("trial", "config")
        for target in ("largest", "random", "smallest")
    ]
    (tmp_path / "spec.yaml").write_text("# spec-hash: h\nname: s\n")  # the fit removed
    export_study(str(tmp_path), S.FAST_PLAN)
    fits = pq.read_table(tmp_path / "fits.parquet").to_pylist()
    assert {r["fit"].split(".")[0] for r in fits} == {"default"}  # default, default.<panel>


PER_TRIAL = ("device", "torch_version", "threads", "n_params", "n_prunable")


def test_where_each_trial_ran_is_a_trials_column(tables):
    """The per-trial record keys reach trials.parquet (the last reported value), typed as the
    record declares them; a trial that never reported has them null."""
    from tune_fixture import FACTS

    t = tables.trials
    for key in PER_TRIAL:
        assert t.schema.field(key).type == schema.arrow_type(FIELDS[key].type)
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    for tid, row in rows.items():
        facts = {k: row[k] for k in PER_TRIAL}
        assert facts == (dict.fromkeys(PER_TRIAL) if tid == "t8" else FACTS), tid
    assert rows["t3"]["num_events"] == 2 and rows["t0"]["num_events"] == 0
    # The epochs table keeps them per epoch.
    assert set(tables.epochs.column("device").to_pylist()) == {"cpu"}


def _strip(blob: bytes, keys: tuple[str, ...], float_epochs: bool = False) -> bytes:
    """Result lines as a prunetune from before `keys` wrote them (optionally with the epoch as a
    float, which sends the parse down the checked slow path)."""
    lines = []
    for line in blob.splitlines():
        result = {k: v for k, v in json.loads(line).items() if k not in keys}
        if float_epochs:
            result["epoch"] = float(result["epoch"])
        lines.append(json.dumps(result).encode() + b"\n")
    return b"".join(lines)


@pytest.mark.parametrize("float_epochs", [False, True], ids=["fast-parse", "checked-parse"])
def test_a_study_recorded_before_the_keys_existed_exports_with_them_null(float_epochs):
    trials, blobs = _case()
    old = [_strip(b, PER_TRIAL, float_epochs) for b in blobs]
    t = S.tables(trials, old).trials
    new = S.tables(trials, blobs).trials
    assert t.schema.equals(new.schema)
    for key in PER_TRIAL:
        assert t.column(key).null_count == t.num_rows, key
    same = [c for c in t.column_names if c not in PER_TRIAL]
    assert t.select(same).equals(new.select(same))
