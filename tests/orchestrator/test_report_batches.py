"""Several epochs in one report to Tune (the spec's ``report_batch_s``): the field, the result.json
lines RecordLogger writes for a batched report, and a trial killed with epochs gathered but not
yet reported, which must come out with the numbers of an undisturbed run."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from orch_helpers import cli_env, run_cli, stable_rows, tiny_spec
from test_cli_failures import refused

from orchestrator.cli.app import main
from orchestrator.tune.tuner import RecordLogger
from results.tables.history import latest_per_epoch, parse_histories
from search_spaces.expand import expand
from search_spaces.spec import load_spec
from trainables.identity import trial_config, trial_key
from trainables.records import BATCH_KEY, empty_record

# --- the spec field -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"), [("-1", "must be >= 0, got -1"), ("abc", "must be a number, got 'abc'")]
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_bad_report_batch_s_is_one_line_naming_the_field(value, rule, dry_run, tmp_path, capsys):
    storage = tmp_path / "st"
    spec = tiny_spec(tmp_path / "s.yaml", "s", tmp_path / "d", storage)
    spec.write_text(spec.read_text() + f"report_batch_s: {value}\n")
    line = refused(capsys, main(["run", str(spec), *(["--dry-run"] if dry_run else [])]))
    assert line.startswith(f"report_batch_s: {rule}"), line
    assert not storage.exists()


def test_report_batch_s_reaches_the_plan_and_keeps_the_hash(tmp_path):
    specs = {
        batch: load_spec(
            str(
                tiny_spec(
                    tmp_path / f"{batch}.yaml",
                    "s",
                    tmp_path / "d",
                    tmp_path / "st",
                    report_batch_s=batch,
                )
            )
        )
        for batch in (0, 0.5, 7.25)
    }
    assert {spec.hash for spec in specs.values()} == {specs[0.5].hash}
    for batch, spec in specs.items():
        assert expand(spec).report_batch_s == batch
        assert "report_batch_s" not in spec.canonical_dict()


# --- result.json lines of a batched report --------------------------------------------------------


class _Trial:
    """What Tune's JSON logger reads of a trial: its config and directory, no checkpoint."""

    checkpoint = None

    def __init__(self, path: Path) -> None:
        path.mkdir()
        self.local_path, self.config = str(path), {"trial": {"seed": 0}, "report_batch_s": 0.5}

    def init_local_path(self) -> None:
        pass


def _record(epoch: int) -> dict:
    record = empty_record(epoch)
    record.update(test_acc=0.5 + epoch / 100, train_loss=1.0 - epoch / 10, lr=0.1)
    return record


def _tune_keys(iteration: int) -> dict:
    return {
        "training_iteration": iteration,
        "trial_id": "abc_00000",
        "time_total_s": 1.5 * iteration,
        "hostname": "node-a",
        "node_ip": "10.0.0.1",
        "done": False,
        "config": {"trial": {"seed": 0}},
    }


def test_record_logger_writes_one_line_per_epoch_of_a_batched_report(tmp_path):
    trial, logger = _Trial(tmp_path / "trial"), RecordLogger()
    batched = {**_record(2), **_tune_keys(1), BATCH_KEY: [_record(0), _record(1)]}
    logger.log_trial_result(1, trial, batched)
    assert BATCH_KEY not in batched  # Tune's snapshot keeps the newest record only
    logger.log_trial_result(2, trial, {**_record(3), **_tune_keys(2)})  # one epoch, no batch key
    logger.log_trial_end(trial)

    blob = (tmp_path / "trial" / "result.json").read_bytes()
    lines = [json.loads(line) for line in blob.decode().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3]
    assert [line["training_iteration"] for line in lines] == [1, 1, 1, 2]
    for line in lines:
        assert "config" not in line and BATCH_KEY not in line
        tune = {k: v for k, v in _tune_keys(line["training_iteration"]).items() if k != "config"}
        assert line == {**_record(line["epoch"]), **tune}
    history = latest_per_epoch(parse_histories([blob], ["result.json"], strict=True))
    assert history.column("epoch").to_pylist() == [0, 1, 2, 3]
    assert history.column("test_acc").to_pylist() == [0.5, 0.51, 0.52, 0.53]
    assert history.column("training_iteration").to_pylist() == [1, 1, 1, 2]


# --- a trial killed with epochs gathered but not reported ----------------------------------------

EPOCHS = 100
ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1", "OMP_NUM_THREADS": "1"}


def _lines(trial_dir: Path) -> list[dict]:
    text = (trial_dir / "result.json").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _trial_dirs(study: Path) -> dict[str, Path]:
    """The trials' directories by trial key."""
    exp = study / "tune" / "trials"
    dirs = {}
    for d in (p for p in exp.iterdir() if p.is_dir()):
        config = json.loads((d / "params.json").read_text())
        dirs[trial_key(trial_config(config))] = d
    return dirs


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_trial_killed_between_batched_reports_ends_with_the_undisturbed_numbers(tmp_path):
    storage, data, faults = tmp_path / "studies", tmp_path / "data", tmp_path / "faults"
    # Epochs of a few hundredths of a second: a report every 0.5 s carries several epochs, and a
    # checkpoint goes with each (checkpoint_frequency 1).
    spec = tiny_spec(
        tmp_path / "s.yaml",
        "b",
        data,
        storage,
        seeds=1,
        train={"epochs": EPOCHS},
        report_batch_s=0.5,
    )
    plan = expand(load_spec(str(spec)))
    reference = run_cli(["run", str(spec), "--name", "reference"], cli_env(**ENV))
    assert reference.returncode == 0, reference.stderr[-3000:]
    faults.mkdir()
    armed = {trial_key(cfg): 40 + 15 * i for i, cfg in enumerate(plan.trials)}
    for key, epoch in armed.items():  # each trial's worker SIGKILLs itself once, at that epoch
        (faults / f"{key}.epoch{epoch}").touch()

    killed = run_cli(
        ["run", str(spec), "--name", "killed"], cli_env(**ENV, PRUNETUNE_FAULT_DIR=str(faults))
    )

    assert killed.returncode == 0, killed.stderr[-3000:]
    study, ref = storage / "killed", storage / "reference"
    # Batching was on: each undisturbed trial reported its epochs in several multi-epoch reports.
    snapshots = list((ref / "tune" / "trials").glob("experiment_state-*.json"))
    assert snapshots and not any(BATCH_KEY in p.read_text() for p in snapshots)
    for d in _trial_dirs(ref).values():
        lines = _lines(d)
        assert [line["epoch"] for line in lines] == list(range(EPOCHS))
        assert 2 <= len({line["training_iteration"] for line in lines}) <= EPOCHS // 2, d
    # Every fault fired; the killed worker's pid is in the fired file's name. The retry started
    # right after the dead worker's last report, from its checkpoint (or from the start, for a
    # kill before the first report). Some kill landed after a report, with epochs gathered and
    # not reported: the dead worker's last reported epoch is more than one before the kill's.
    reported, lost = [], []
    dirs = _trial_dirs(study)
    for key, epoch in armed.items():
        (fired,) = faults.glob(f"{key}.epoch{epoch}.fired-*")
        pid = int(fired.name.rsplit("-", 1)[1])
        lines = _lines(dirs[key])
        dead = [line["epoch"] for line in lines if line["pid"] == pid]
        retry = [line["epoch"] for line in lines if line["pid"] != pid]
        assert dead == list(range(len(dead))) and len(dead) <= epoch, (key, dead)
        assert retry == list(range(len(dead), EPOCHS)), (key, retry)
        reported.append(len(dead))
        lost.append(epoch - len(dead))  # epochs run but not reported when it died
    assert any(r > 0 and n >= 1 for r, n in zip(reported, lost, strict=True)), (reported, lost)

    for table, keys in (("epochs", ("trial_key", "epoch")), ("events", ("trial_key", "epoch"))):
        rows = stable_rows(study / f"{table}.parquet", keys)
        assert rows and rows == stable_rows(ref / f"{table}.parquet", keys), table
    epochs = stable_rows(study / "epochs.parquet", ("trial_key", "epoch"))
    per_trial = collections.Counter(r["trial_key"] for r in epochs)
    assert per_trial == {key: EPOCHS for key in armed}
    assert len({(r["trial_key"], r["epoch"]) for r in epochs}) == len(epochs)
    trials = stable_rows(study / "trials.parquet", ("trial_key",))
    assert {t["status"] for t in trials} == {"ok"}
    assert trials == stable_rows(ref / "trials.parquet", ("trial_key",))
    failures = pq.read_table(study / "trials.parquet", columns=["num_failures"]).to_pylist()
    assert [f["num_failures"] for f in failures] == [1] * len(armed)
