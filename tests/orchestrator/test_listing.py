"""The read-only views through the real CLI: --version, ls, status by name, --json, show with
overrides."""

from __future__ import annotations

import json

import pytest
from orch_helpers import created_study

from orchestrator.cli.app import main
from results.tables.schema import prunetune_version
from search_spaces.presets import list_presets, preset_description
from search_spaces.spec import load_spec, spec_from_yaml


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"prunetune {prunetune_version()}"


def test_ls_lists_every_study_with_hash_counts_and_state(tmp_path, capsys):
    a = created_study(tmp_path, "alpha")
    spec_a = a.spec
    created_study(tmp_path, "beta")
    damaged = tmp_path / "st" / "gamma"
    damaged.mkdir()
    (damaged / "study.json").write_text("{not json")
    (tmp_path / "st" / "not-a-study").mkdir()  # no study.json: not listed

    assert main(["ls", str(tmp_path / "st"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["studies"]
    assert [r["name"] for r in rows] == ["alpha", "beta", "gamma"]
    alpha = rows[0]
    assert alpha["spec_hash"] == spec_a.hash and alpha["state"] == "not started"
    assert (alpha["finished"], alpha["expected"]) == (0, 6) and alpha["counts"]["pending"] == 6
    assert alpha["updated"] and alpha["study"] == a.uri
    assert rows[2]["state"] == "damaged" and "study.json" in rows[2]["reason"]

    assert main(["ls", str(tmp_path / "st")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SPEC", "HASH", "TRIALS", "STATE", "UPDATED", "(UTC)"]
    assert lines[1].split()[:5] == ["alpha", spec_a.hash, "0/6", "not", "started"]
    assert lines[3].startswith("gamma") and "damaged:" in lines[3]


def test_ls_of_an_empty_or_missing_storage(tmp_path, capsys):
    assert main(["ls", str(tmp_path / "none"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["studies"] == []
    assert main(["ls", str(tmp_path / "none")]) == 0
    assert "no studies in" in capsys.readouterr().err


def test_status_by_name_resolves_against_the_storage(tmp_path, capsys, monkeypatch):
    study = created_study(tmp_path, "alpha")
    spec = study.spec
    assert main(["status", "alpha", "--storage", str(tmp_path / "st"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["study"] == study.uri and status["spec_hash"] == spec.hash
    assert status["state"] == "not started" and status["driver"] is None
    (experiment,) = status["experiments"]
    assert experiment["experiment"] == "trials" and experiment["expected"] == 6
    assert status["gain"] is None and status["job"] is None
    monkeypatch.chdir(tmp_path / "st" / "..")  # the default storage is ./studies
    (tmp_path / "st").rename(tmp_path / "studies")
    assert main(["status", "alpha"]) == 0
    assert capsys.readouterr().out.startswith(f"study {tmp_path / 'studies' / 'alpha'} (spec ")


def test_presets_json(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(list_presets())
    assert all(r["description"] == preset_description(r["name"]) for r in rows)


def test_show_with_overrides_prints_the_resolved_spec(capsys):
    assert main(["show", "quickstart", "train.epochs=70", "seeds=1"]) == 0
    text = capsys.readouterr().out
    spec = spec_from_yaml(text)
    assert spec.train.epochs == 70 and spec.seeds == (0,)
    assert text.splitlines()[0] == f"# spec-hash: {spec.hash}"
    assert spec.hash == load_spec("quickstart", overrides=["train.epochs=70", "seeds=1"]).hash
