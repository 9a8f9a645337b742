"""Edges of the input, through the real CLI: documents and counts too big to build, flags that
would silently do nothing. Each is one line on stderr, exit code 2, quickly, nothing written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from orch_helpers import created_study
from test_cli_failures import refused

from orchestrator.cli.app import main
from search_spaces.expand import expand
from search_spaces.yaml_io import dump_yaml


def _bomb(levels: int) -> str:
    """A YAML value of `levels` levels of 9 aliases each: 9**levels strings in a few hundred bytes."""
    value = "&a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, levels):
        value = f"&a{i} [{value}, {', '.join([f'*a{i - 1}'] * 8)}]"
    return value


def _timed_refusal(capsys, argv: list[str]) -> str:
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    line = refused(capsys, code)
    assert elapsed < 45, elapsed  # a bomb hung for minutes; room for a busy machine
    return line


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_in_a_spec_file_is_refused_at_once(levels, tmp_path, capsys):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(f"name: bomb\npruning:\n  target: {_bomb(levels)}\n")
    line = _timed_refusal(capsys, ["run", str(spec), "--dry-run"])
    assert "values once its aliases are expanded" in line and len(line) < 300


def test_an_alias_bomb_in_an_override_is_refused_at_once(capsys):
    line = _timed_refusal(capsys, ["run", "--dry-run", "quickstart", f"pruning.target={_bomb(9)}"])
    assert "values once its aliases are expanded" in line and len(line) < 300


def test_an_alias_bomb_in_a_stored_spec_does_not_hang_status(tmp_path, capsys):
    study = created_study(tmp_path)
    spec_file = tmp_path / "st" / "s" / "spec.yaml"
    assert spec_file.is_file()
    spec_file.write_text(f"name: s\npruning:\n  target: {_bomb(9)}\n")
    line = _timed_refusal(capsys, ["status", study.uri])
    assert "values once its aliases are expanded" in line and len(line) < 300


def test_a_self_referencing_alias_and_deep_nesting_are_one_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\npruning:\n  target: &a [x, *a]\n")
    assert "refers to a node that contains it" in _timed_refusal(capsys, ["run", str(spec)])
    spec.write_text("name: s\npruning:\n  target: " + "[" * 1200 + "]" * 1200 + "\n")
    assert "nested more than" in _timed_refusal(capsys, ["run", str(spec)])


def test_an_error_line_shows_a_bounded_value(tmp_path, capsys):
    """A value below the document bounds still prints at most a few hundred characters."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\ngeneralization: {_bomb(4)}\n")
    line = _timed_refusal(capsys, ["run", str(spec), "--dry-run"])
    assert line.startswith("generalization: ") and len(line) < 400, line


def test_a_long_invalid_grid_is_refused_quickly_in_few_lines(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\npruning:\n  target: [" + ", ".join(map(str, range(12000))) + "]\n")
    start = time.monotonic()
    assert main(["run", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - start < 45
    assert len(err.splitlines()) <= 52 and "more problems" in err


@pytest.mark.parametrize("count", [2**63, 2**63 - 1, 10**10, 200_001])
def test_a_huge_seed_count_is_refused_before_building_the_seeds(count, capsys):
    line = _timed_refusal(capsys, ["run", "--dry-run", "quickstart", f"seeds={count}"])
    assert line.startswith("seeds: ") and "200,000" in line


def test_json_without_dry_run_is_refused_before_anything_runs(tmp_path, capsys):
    storage = tmp_path / "st"
    line = refused(capsys, main(["run", "quickstart", "--json", "--storage", str(storage)]))
    assert line.startswith("--json: ") and "--dry-run" in line
    assert not storage.exists()


# --- the dry run and status say what is so ---------------------------------------------------------


def _snapshot(study, statuses: list[tuple[str, dict]]) -> None:
    """A Tune snapshot of the study's trials experiment: (Tune status, last result) per trial."""
    exp = Path(study.tune_path("trials"))
    exp.mkdir(parents=True, exist_ok=True)
    trials = expand(study.spec).trials
    data = [
        [
            json.dumps(
                {
                    "trial_id": f"t{i}",
                    "status": st,
                    "relative_logdir": f"t{i}",
                    "config": {"trial": trials[i].to_dict()},
                }
            ),
            json.dumps({"last_result": last, "num_failures": 0}),
        ]
        for i, (st, last) in enumerate(statuses)
    ]
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))


DONE = ("TERMINATED", {"training_iteration": 3, "status": "done"})
RUNNING = ("RUNNING", {"training_iteration": 1, "status": "running"})


def test_every_refusal_and_the_wall_time_line_are_in_the_dry_run(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        dump_yaml(
            {
                "name": "s",
                "dataset": {"name": "cifar10", "data_dir": str(tmp_path / "none")},
                "model": {"name": "vgg11_bn", "width": 8},
                "train": {"epochs": 2},
                "resources": {"cpu": 1, "gpu": 64},
                "storage": str(tmp_path / "st"),
            }
        )
    )
    assert main(["run", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    refusals = [line for line in out.splitlines() if line.startswith("  refused: ")]
    assert [r.split(":")[1].strip() for r in refusals] == ["dataset.data_dir", "resources.gpu"]
    assert "would be refused" in out.splitlines()[0]
    assert "  wall time on this machine" in out and "no node of it holds a trial" in out
    assert main(["run", str(spec), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["reasons"]) == 2 and plan["wall"]["concurrency"] == 0


def test_a_finished_studys_dry_run_says_nothing_would_run(tmp_path, capsys):
    study = created_study(tmp_path)
    _snapshot(study, [DONE] * 6)
    assert main(["run", str(tmp_path / "s.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "the study is complete; nothing would run" in out.splitlines()[0], out
    assert "would resume" not in out and "every trial has finished" in out


def test_status_without_a_driver_shows_no_trial_running(tmp_path, capsys):
    study = created_study(tmp_path)
    _snapshot(study, [DONE, RUNNING, RUNNING])
    assert main(["status", study.uri]) == 0
    out = capsys.readouterr().out
    assert " running" not in out and "2 interrupted" in out, out
    assert main(["status", study.uri, "--json"]) == 0
    (exp,) = json.loads(capsys.readouterr().out)["experiments"]
    assert exp["counts"]["running"] == 0 and exp["counts"]["interrupted"] == 2


def test_an_unwritable_mnist1d_cache_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file where HOME should be a directory")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PRUNETUNE_DATA", raising=False)
    storage = tmp_path / "st"
    line = refused(capsys, main(["run", "quickstart", "--storage", str(storage)]))
    assert line.startswith("dataset.data_dir: MNIST-1D is generated once and cached in ")
    assert f"{home}/.cache/prunetune/data/mnist1d" in line and not storage.exists()
    assert main(["run", "quickstart", "--storage", str(storage), "--dry-run"]) == 0
    assert "refused: dataset.data_dir: MNIST-1D" in capsys.readouterr().out


def test_aggregate_counts_the_planned_trials_tune_has_not_created(tmp_path, capsys):
    study = created_study(tmp_path)
    _snapshot(study, [RUNNING])  # 1 trial in Tune's state, 5 more in the plan
    assert main(["aggregate", study.uri]) == 0
    out = capsys.readouterr().out
    assert "incomplete: 6 trial(s) still to finish (1 in Tune's state, 5 not started yet)" in out


def test_the_readme_documents_every_exit_code_the_help_lists():
    """`--help`'s exit codes (orchestrator.cli.app.EXIT_CODES) each have a row in the README's table."""
    import re

    from orchestrator.cli.app import EXIT_CODES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = set(re.findall(r"^\| (\d+) \|", readme, re.M))
    helped = set(re.findall(r"^  (\d+) ", EXIT_CODES, re.M))
    assert helped and helped <= table, helped - table


def test_a_long_string_is_shown_cut_in_its_error_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\ndataset: {{name: {'y' * 40_000}}}\n")
    line = _timed_refusal(capsys, ["run", str(spec), "--dry-run"])
    assert line.startswith("dataset.name: unknown dataset 'yyy") and len(line) < 400, len(line)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "quickstart", "seeds=1", "--dry-run", "--json"],
        ["run", "quickstart", "--dry-run", "seeds=1", "--json"],
        ["run", "--dry-run", "quickstart", "--json", "seeds=1"],
    ],
)
def test_overrides_may_come_before_or_after_the_options(argv, capsys):
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["trials"]["total"] == 10  # 9 pruned and 1 baseline on one seed; 30 on three


def test_an_unknown_option_after_the_overrides_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "quickstart", "--dry-run", "seeds=1", "--bogus"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
