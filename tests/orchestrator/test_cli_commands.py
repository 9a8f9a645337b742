"""The CLI without Ray: bad input exits 2 and writes nothing; study identity; presets; dry run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from orch_helpers import REPO, cli_env, tiny_spec

from orchestrator.cli.app import main
from orchestrator.study.directory import locate, open_for_run
from search_spaces.expand import expand
from search_spaces.presets import list_presets, preset_description, preset_text
from search_spaces.spec import load_spec, spec_from_yaml

BAD_SPECS = {
    "several problems": (
        "name: bad\nmodel: {name: vgg12}\ntrain: {epochs: 0, lr: abc}\nbogus: 1\n",
        ["bogus:", "model.name:", "train.lr:", "train.epochs:"],
    ),
    "yaml syntax": ("name: bad\nmodel: {name: [\n", ["invalid YAML at line"]),
    "unknown target": (
        "name: bad\npruning: {method: schedule, target: [smallest, biggest]}\n",
        ["pruning.target"],
    ),
    "negative report interval": (
        "name: bad\nreport_every: -1\n",
        ["report_every: must be >= 0, got -1"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_exits_2_with_one_line_per_problem_and_writes_nothing(case, tmp_path, capsys):
    text, fields = BAD_SPECS[case]
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    storage = tmp_path / "studies"

    code = main(["run", str(spec), "--storage", str(storage)])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("prunetune: error: ")
    lines[0] = lines[0].removeprefix("prunetune: error: ")
    assert len(lines) == len(fields)
    for field in fields:
        assert sum(line.startswith(field) or field in line for line in lines) == 1, field
    assert "Traceback" not in err
    assert not storage.exists()


@pytest.mark.parametrize(("spec_text", "extra", "code"), [
    (BAD_SPECS["several problems"][0], [], 2),
    ("name: fine\nmodel: {name: mlp}\ntrain: {epochs: 2}\n", ["--dry-run"], 0),
])  # fmt: skip
def test_bad_input_and_dry_run_neither_import_nor_start_ray(tmp_path, spec_text, extra, code):
    """In a fresh process: a refused spec, or a dry run, never gets as far as importing Ray."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    script = (
        "import sys\nfrom orchestrator.cli.app import main\n"
        f"code = main(['run', {str(spec)!r}, '--storage', {str(tmp_path / 's')!r}, *{extra!r}])\n"
        "print(code, 'ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=cli_env(), capture_output=True, text=True
    )
    assert out.stdout.split()[-2:] == [str(code), "False"], out.stderr
    assert not (tmp_path / "s").exists()


def test_unknown_preset_and_missing_file_exit_2(tmp_path, capsys):
    assert main(["run", "no-such-preset", "--storage", str(tmp_path / "s")]) == 2
    assert "unknown preset 'no-such-preset'; choose one of: " in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such spec file" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def _create(tmp_path, name="ident", **overrides):
    spec_file = tiny_spec(
        tmp_path / f"{name}.yaml", name, tmp_path / "data", tmp_path / "studies", **overrides
    )
    spec = load_spec(str(spec_file))
    target = locate(spec)
    return spec_file, spec, open_for_run(target, spec, expand(spec)), target.exists


def test_new_study_records_its_spec_and_hash(tmp_path):
    _, spec, study, resumed = _create(tmp_path)
    assert not resumed
    text = (tmp_path / "studies" / "ident" / "spec.yaml").read_text()
    assert text.splitlines()[0] == f"# spec-hash: {spec.hash}"
    assert spec_from_yaml(text).hash == spec.hash
    meta = json.loads((tmp_path / "studies" / "ident" / "study.json").read_text())
    assert meta["name"] == "ident" and meta["spec_hash"] == spec.hash
    assert meta["experiments"] == ["trials"] and meta["created"] and meta["prunetune_version"]
    # The same spec again: the same study, resumed, nothing rewritten.
    target = locate(spec)
    again = open_for_run(target, spec, expand(spec))
    assert target.exists and again.path == study.path
    assert json.loads((tmp_path / "studies" / "ident" / "study.json").read_text()) == meta


def test_new_study_records_the_drivers_environment(tmp_path):
    """study.json's ``environment``: the driver's, as results.tables.environment reads it at creation,
    and what the report's loader hands on."""
    from results.tables.environment import KEYS, environment
    from results.tables.storage import read_meta, resolve

    _, _, study, _ = _create(tmp_path)
    meta = json.loads((tmp_path / "studies" / "ident" / "study.json").read_text())
    env = meta["environment"]
    assert list(env) == list(KEYS)
    now = environment()
    assert {k: env[k] for k in KEYS} == now  # nothing in this environment changed since
    assert env["python_version"] == sys.version.split()[0]
    assert read_meta(*resolve(study.uri), study.uri).environment == env


def test_other_spec_under_the_same_name_is_refused(tmp_path, capsys):
    _, spec, study, _ = _create(tmp_path)
    other = tiny_spec(
        tmp_path / "other.yaml",
        "ident",
        tmp_path / "data",
        tmp_path / "studies",
        train={"epochs": 4},
    )
    before = sorted(p.name for p in (tmp_path / "studies" / "ident").iterdir())

    code = main(["run", str(other)])

    err = capsys.readouterr().err.strip()
    other_hash = load_spec(str(other)).hash
    assert code == 2
    assert err == (
        f"prunetune: error: study {study.uri} exists with spec hash {spec.hash}; this spec hashes "
        f"to {other_hash}: use another --name or resume it"
    )
    assert sorted(p.name for p in (tmp_path / "studies" / "ident").iterdir()) == before


def test_resume_refuses_an_edited_spec_yaml(tmp_path, capsys):
    _, spec, study, _ = _create(tmp_path)
    spec_yaml = tmp_path / "studies" / "ident" / "spec.yaml"
    spec_yaml.write_text(spec_yaml.read_text().replace("epochs: 3", "epochs: 5"))

    code = main(["resume", study.uri])

    err = capsys.readouterr().err
    assert code == 2
    assert f"created with spec hash {spec.hash} but its spec.yaml now hashes to" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_and_status_refuse_a_directory_that_is_no_study(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    for command in ("resume", "status"):
        assert main([command, str(tmp_path / "junk")]) == 2
        assert "not a prunetune study directory" in capsys.readouterr().err


def test_run_refuses_a_foreign_directory_under_the_study_name(tmp_path, capsys):
    spec_file = tiny_spec(tmp_path / "x.yaml", "taken", tmp_path / "data", tmp_path / "studies")
    (tmp_path / "studies" / "taken").mkdir(parents=True)
    (tmp_path / "studies" / "taken" / "mine.csv").write_text("1")
    assert main(["run", str(spec_file)]) == 2
    assert "exists and is not a prunetune study (holds mine.csv)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "studies" / "taken").iterdir()) == ["mine.csv"]


def test_a_directory_holding_only_the_submission_record_becomes_the_study(tmp_path):
    (tmp_path / "studies" / "ident").mkdir(parents=True)
    (tmp_path / "studies" / "ident" / "submission.json").write_text("{}")
    _, _, _, resumed = _create(tmp_path)
    assert not resumed
    assert (tmp_path / "studies" / "ident" / "study.json").exists()


def test_status_of_a_study_that_never_ran(tmp_path, capsys):
    _, spec, study, _ = _create(tmp_path)
    assert main(["status", study.uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"study {study.uri} (spec {spec.hash}): not started"
    assert (
        out[1]
        == "trials: 0/6 finished: 0 ok, 0 diverged; 0 running, 0 error, 6 pending (not started)"
    )
    assert out[2].startswith("gain: none yet")


def test_presets_lists_every_preset_with_its_description(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(list_presets())
    for line, name in zip(lines, list_presets(), strict=True):
        assert line.endswith(preset_description(name)) and preset_description(name)
    assert "quickstart" in list_presets()


@pytest.mark.parametrize("name", list_presets())
def test_show_prints_the_preset_yaml_which_loads_to_the_same_spec(name, capsys):
    assert main(["show", name]) == 0
    out = capsys.readouterr().out
    assert out == preset_text(name)
    assert spec_from_yaml(out, default_name=name).hash == load_spec(name).hash


def test_show_unknown_preset_exits_2(capsys):
    assert main(["show", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    spec_file = tiny_spec(tmp_path / "d.yaml", "dry", tmp_path / "data", tmp_path / "studies")
    assert main(["run", str(spec_file), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    spec = load_spec(str(spec_file))
    where = tmp_path / "studies" / "dry"
    assert (
        out[0]
        == f"study {where} (spec {spec.hash}): would start a new study; dry run, nothing written"
    )
    assert "  trials: 6 (4 pruned, 2 baselines), 18 epochs" in out
    assert any(line.startswith("  compute: ") for line in out)
    assert any(line.startswith("  wall time on this machine (") for line in out)
    assert "  detectable at trial level, all: n = 4, |r| >= 0.99" in out  # tanh(2.80 / 1)
    assert not (tmp_path / "studies").exists()
