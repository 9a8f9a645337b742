"""The Optuna mirror without Ray running: which Optuna trials Tune's state gives (checked against
Tune's own Repeater), and how optuna.db is written, kept and rebuilt."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pyarrow.fs as pafs
import pytest
from optuna.trial import TrialState
from ray.tune.search import Repeater, Searcher

from orchestrator.optuna_mirror.db import Memo, MirrorStudy, storage_url, write_mirror
from orchestrator.optuna_mirror.mirror import MirrorSpec, TrialView, mirror_trials
from orchestrator.tune.mirror_callback import OptunaMirror
from search_spaces.expand import expand
from search_spaces.spec import spec_from_yaml
from trainables.identity import trial_config, trial_key

SPEC = """
name: mirror
dataset: {name: mnist1d, num_samples: 1000}
model: {name: mlp, width: 16}
train: {epochs: 3}
pruning:
  method: schedule
  target: {choice: [random, largest]}
  period: {int: [1, 3]}
  layers: [{name: fc1, final_fraction: 0.5, start_epoch: 0, end_epoch: 2}]
seeds: [3, 7]
search: {algorithm: optuna, num_samples: 4, metric: test_acc, mode: max, seed: 1}
"""
PLAN = expand(spec_from_yaml(SPEC)).optuna
STUDY = MirrorStudy(
    "mirror", "maximize", PLAN.distributions, (("metric", "test_acc"), ("seeds", [3, 7]))
)
MIRROR = MirrorSpec(STUDY, "test_acc", PLAN.seeds)
T0 = 1_750_000_000.0


def _view(n: int, index: int, target: str, period: int, status: str, acc: float | None):
    """Tune trial `n`: seed `index` of a suggestion, started at T0 + n, last result 10 s later."""
    trial = copy.deepcopy(PLAN.base)
    trial["pruning"].update(target=target, period=period)
    config = {"trial": trial, "seeds": list(PLAN.seeds), "__trial_index__": index}
    result = {} if acc is None else {"test_acc": acc, "status": "done", "training_iteration": 3}
    ended = None if acc is None else T0 + n + 10.123456
    return TrialView(f"t{n:05d}", n + 1, status, config, result, T0 + n, ended)


def _views(**changes):
    """Four suggestions x two seeds; `changes` maps a trial number to (status, acc)."""
    base = {
        0: ("TERMINATED", 0.5),
        1: ("TERMINATED", 0.75),
        2: ("TERMINATED", 0.25),
        3: ("ERROR", None),
        4: ("ERROR", None),
        5: ("ERROR", 0.9),  # reported, then failed for good: Tune tells the searcher no result
        6: ("TERMINATED", 0.6),
        7: ("RUNNING", 0.4),
    }
    base.update({int(k[1:]): v for k, v in changes.items()})
    params = [("random", 1), ("largest", 3), ("random", 2), ("largest", 1)]
    return [_view(n, n % 2, *params[n // 2], *base[n]) for n in range(8)]


class _Told(Searcher):
    """Records what Tune's Repeater tells the searcher when a suggestion's seeds have ended."""

    def __init__(self):
        super().__init__(metric="test_acc", mode="max")
        self.told: dict[str, float] = {}

    def suggest(self, trial_id):
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told[trial_id] = result["test_acc"]


def _repeater_values(views) -> dict[str, float]:
    """Drive ray.tune.search.Repeater as Tune does: suggest in creation order; on an end, the
    last result (TERMINATED) or no result with error=True (ERROR)."""
    told = _Told()
    repeater = Repeater(told, repeat=2)
    for view in views:
        repeater.suggest(view.trial_id)
    for view in views:
        if view.tune_status == "TERMINATED":
            repeater.on_trial_complete(view.trial_id, result=view.last_result)
        elif view.tune_status == "ERROR":
            repeater.on_trial_complete(view.trial_id, error=True)
    return told.told


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the Repeater's, for the FAIL one
def test_one_trial_per_suggestion_with_the_value_the_repeater_reports():
    views = _views()

    trials = mirror_trials(MIRROR, views)

    told = _repeater_values(views)
    assert {t.key for t in trials} == set(told) == {"t00000", "t00002", "t00004"}
    for t in trials:  # the suggestion with one seed still running is not there yet
        expected = told[t.key]
        assert (t.value is None) if math.isnan(expected) else (t.value == expected)
    by_key = {t.key: t for t in trials}
    assert by_key["t00000"].value == 0.625 and by_key["t00002"].value == 0.25
    assert by_key["t00004"].value is None  # no seed gave a value: FAIL
    first = by_key["t00000"]
    assert first.params == {"pruning.target": "random", "pruning.period": 1}
    keys = [trial_key(trial_config(v.config)) for v in views[:2]]
    assert first.user_attrs == {
        "tune_trial_ids": ["t00000", "t00001"],
        "trial_keys": keys,
        "seeds": [3, 7],
        "statuses": ["ok", "ok"],
        "seed_values": [0.5, 0.75],
    }
    assert by_key["t00002"].user_attrs["statuses"] == ["ok", "error"]
    assert by_key["t00002"].user_attrs["seed_values"] == [0.25, None]
    assert (first.start_s, first.end_s) == (T0, T0 + 1 + 10.123456)
    assert [t.end_s for t in trials] == sorted(t.end_s for t in trials)


def test_seeds_are_grouped_in_creation_order_whatever_the_listing_order():
    views = _views(t7=("TERMINATED", 0.4))
    shuffled = [views[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]  # as a snapshot may list them

    assert mirror_trials(MIRROR, shuffled) == mirror_trials(MIRROR, views)


def test_a_trial_out_of_the_repeaters_order_is_refused():
    views = _views()
    views[2].config["__trial_index__"] = 1  # a second seed where a suggestion must start
    with pytest.raises(ValueError, match="out of the Repeater's order"):
        mirror_trials(MIRROR, views)


def _store_snapshot(exp_dir: Path, views: list[TrialView], stamp: str) -> None:
    """Write ``experiment_state-<stamp>.json`` as Tune stores it: per trial, the JSON of its
    state and of its run metadata (``Trial.get_json_state``)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    entries = [
        [
            json.dumps(
                {
                    "trial_id": v.trial_id,
                    "status": v.tune_status,
                    "config": v.config,
                    "relative_logdir": f"trial_{v.trial_id}",
                    "experiment_tag": f"{v.created}_target={v.config['trial']['pruning']['target']}",
                }
            ),
            json.dumps(
                {
                    "last_result": v.last_result,
                    "start_time": v.start_s,
                    "last_result_time": v.end_s,
                    "num_failures": 0,
                }
            ),
        ]
        for v in views
    ]
    (exp_dir / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": entries}))


def test_the_callback_mirrors_the_stored_snapshot_never_the_live_trials(tmp_path):
    """A suggestion lands once the snapshot Tune stored (what a resume restores) has all its
    seeds ended; whatever the live trials say, a seed ended after that snapshot would be run again
    by a resume after a kill."""
    exp_dir = tmp_path / "tune" / "optuna"
    context = SimpleNamespace(
        storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(exp_dir)
    )
    callback = pickle.loads(pickle.dumps(OptunaMirror(MIRROR, poll_s=0)))  # as Tune restores it
    views = _views()[:4]  # t00000..t00003: two suggestions, all seeds TERMINATED or ERROR
    live = _live(context, views)  # Tune's trials as the loop sees them: all four ended
    stored = [dataclasses.replace(v, tune_status="RUNNING") for v in views[:2]]

    callback.on_step_end(0, live)  # no snapshot stored yet: no file
    assert not (tmp_path / "optuna.db").exists()
    _store_snapshot(exp_dir, [views[0], stored[1]], "2026-11-30_00-00-00")
    callback.on_step_end(1, live)
    assert _db(tmp_path).get_trials() == []  # seed 7 of the first suggestion not stored ended
    _store_snapshot(exp_dir, views, "2026-11-30_00-00-10")
    callback.on_step_end(2, live)

    stored_trials = _db(tmp_path).get_trials()
    assert [t.user_attrs["tune_trial_ids"] for t in stored_trials] == [
        ["t00000", "t00001"],
        ["t00002", "t00003"],
    ]
    assert [t.value for t in stored_trials] == [0.625, 0.25]
    before = (tmp_path / "optuna.db").stat().st_mtime_ns
    callback.on_step_end(3, live)  # the same snapshot: not read, not written again
    assert (tmp_path / "optuna.db").stat().st_mtime_ns == before


def _live(context, views: list[TrialView]) -> list[SimpleNamespace]:
    """What the Callback reads of Tune's live trials."""
    return [
        SimpleNamespace(storage=context, trial_id=v.trial_id, status=v.tune_status) for v in views
    ]


def test_the_callback_looks_for_a_new_snapshot_at_most_every_poll_s(tmp_path):
    exp_dir = tmp_path / "tune" / "optuna"
    context = SimpleNamespace(
        storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(exp_dir)
    )
    callback = OptunaMirror(MIRROR, poll_s=3600)
    live = _live(context, _views()[:2])
    callback.on_step_end(0, live)  # looks: nothing stored yet
    _store_snapshot(exp_dir, _views()[:2], "2026-11-30_00-00-00")
    callback.on_step_end(1, live)  # within poll_s: does not look
    assert not (tmp_path / "optuna.db").exists()
    callback.update(context)
    assert len(_db(tmp_path).get_trials()) == 1


def test_the_callback_looks_only_while_a_trial_ended_that_the_stored_snapshot_lacks(
    tmp_path, monkeypatch
):
    """Once the snapshot it mirrored shows every trial that ended, no new snapshot can change the
    mirror until another trial ends: it does not list the experiment directory meanwhile."""
    from orchestrator.tune import mirror_callback

    handler = SimpleNamespace(listings=0)
    listing = mirror_callback.newest_snapshot_info

    def counted(fs, path):  # the look at the experiment directory: a listing on a bucket
        handler.listings += 1
        return listing(fs, path)

    monkeypatch.setattr(mirror_callback, "newest_snapshot_info", counted)
    exp_dir = tmp_path / "tune" / "optuna"
    context = SimpleNamespace(
        storage_filesystem=pafs.LocalFileSystem(), experiment_fs_path=str(exp_dir)
    )
    callback = OptunaMirror(MIRROR, poll_s=0)
    views = _views()[:4]
    running = [dataclasses.replace(v, tune_status="RUNNING", last_result={}) for v in views]
    _store_snapshot(exp_dir, [*views[:2], *running[2:]], "2026-11-30_00-00-00")
    live = _live(context, [*views[:2], *running[2:]])
    callback.on_step_end(0, live)  # first look: mirrors the first suggestion
    assert len(_db(tmp_path).get_trials()) == 1
    looked = handler.listings
    for step in range(1, 50):  # the stored snapshot has every ended trial: no look
        callback.on_step_end(step, live)
    assert handler.listings == looked

    live = _live(context, views)  # the second suggestion's seeds end ...
    callback.on_step_end(50, live)  # ... not stored yet: it looks, and keeps looking
    callback.on_step_end(51, live)
    assert handler.listings > looked and len(_db(tmp_path).get_trials()) == 1
    _store_snapshot(exp_dir, views, "2026-11-30_00-00-10")
    callback.on_step_end(52, live)
    assert len(_db(tmp_path).get_trials()) == 2
    looked = handler.listings
    for step in range(53, 100):
        callback.on_step_end(step, live)
    assert handler.listings == looked


def _db(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="mirror", storage=storage_url(str(tmp_path / "optuna.db")))


def test_the_file_holds_the_trials_and_writing_again_changes_nothing(tmp_path):
    trials = mirror_trials(MIRROR, _views())

    written = write_mirror(pafs.LocalFileSystem(), str(tmp_path), STUDY, trials)

    assert (written.trials, written.added, written.rebuilt, written.created) == (3, 3, False, True)
    study = _db(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs == {"metric": "test_acc", "seeds": [3, 7]}
    stored = study.get_trials()
    assert [t.number for t in stored] == [0, 1, 2]
    assert [t.user_attrs["tune_trial_ids"][0] for t in stored] == [t.key for t in trials]
    assert [t.state for t in stored] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert [t.value for t in stored] == [0.625, 0.25, None]
    assert stored[0].params == {"pruning.target": "random", "pruning.period": 1}
    assert stored[0].distributions["pruning.period"] == optuna.distributions.IntDistribution(1, 3)
    assert stored[0].datetime_start == datetime.datetime.fromtimestamp(T0)
    assert stored[0].datetime_complete == datetime.datetime.fromtimestamp(T0 + 11.123456)
    before = (tmp_path / "optuna.db").read_bytes()

    again = write_mirror(pafs.LocalFileSystem(), str(tmp_path), STUDY, trials)

    assert (again.added, again.rebuilt, again.created) == (0, False, False)
    assert (tmp_path / "optuna.db").read_bytes() == before


def test_new_trials_are_appended_and_changed_ones_rebuilt_in_place(tmp_path):
    fs, path = pafs.LocalFileSystem(), str(tmp_path)
    write_mirror(fs, path, STUDY, mirror_trials(MIRROR, _views()))
    reader = optuna.storages.RDBStorage(storage_url(str(tmp_path / "optuna.db")))
    study_id = reader.get_study_id_from_name("mirror")  # as optuna-dashboard holds it open

    appended = write_mirror(fs, path, STUDY, mirror_trials(MIRROR, _views(t7=("TERMINATED", 0.4))))

    assert (appended.added, appended.rebuilt) == (1, False)
    assert [t.value for t in reader.get_all_trials(study_id)] == [0.625, 0.25, None, 0.5]

    # A resumed study re-ran trial 3, which had failed: suggestion t00002 changes.
    resumed = _views(t7=("TERMINATED", 0.4), t3=("TERMINATED", 0.35))
    rebuilt = write_mirror(fs, path, STUDY, mirror_trials(MIRROR, resumed))

    assert (rebuilt.trials, rebuilt.rebuilt, rebuilt.created) == (4, True, False)
    stored = reader.get_all_trials(study_id)  # the open reader sees the new study, same id
    assert [t.user_attrs["tune_trial_ids"][0] for t in stored] == [
        "t00000",
        "t00002",
        "t00004",
        "t00006",
    ]
    assert stored[1].value == pytest.approx(0.3) and stored[1].state == TrialState.COMPLETE
    assert [t.number for t in stored] == [0, 1, 2, 3]
    reader.engine.dispose()

    # Trials that left Tune's state (re-made under new ids after a crash) leave the file.
    gone = write_mirror(fs, path, STUDY, mirror_trials(MIRROR, resumed[:4]))
    assert gone.rebuilt and len(_db(tmp_path).trials) == 2


def test_the_memo_is_trusted_only_while_the_file_is_untouched(tmp_path):
    fs, path, memo = pafs.LocalFileSystem(), str(tmp_path), Memo()
    trials = mirror_trials(MIRROR, _views())
    write_mirror(fs, path, STUDY, trials[:2], memo)
    assert write_mirror(fs, path, STUDY, trials, memo).added == 1  # appended, no read back
    (tmp_path / "optuna.db").unlink()  # e.g. a user deleted it

    again = write_mirror(fs, path, STUDY, trials, memo)

    assert again.created and len(_db(tmp_path).trials) == 3


def test_a_file_that_is_not_the_mirror_is_replaced(tmp_path):
    (tmp_path / "optuna.db").write_bytes(b"not a database")
    trials = mirror_trials(MIRROR, _views())

    written = write_mirror(pafs.LocalFileSystem(), str(tmp_path), STUDY, trials)

    assert written.created and len(_db(tmp_path).trials) == 3
    other = MirrorStudy("mirror", "minimize", STUDY.distributions, STUDY.user_attrs)
    assert write_mirror(pafs.LocalFileSystem(), str(tmp_path), other, trials).created
    assert _db(tmp_path).direction == optuna.study.StudyDirection.MINIMIZE
    assert [p for p in os.listdir(tmp_path) if p != "optuna.db"] == []  # no temporary left


def test_object_storage_gets_the_file_uploaded_whole(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())  # any non-local fs
    (tmp_path / "s").mkdir()
    trials = mirror_trials(MIRROR, _views())

    first = write_mirror(fs, "s", STUDY, trials)
    mtime = os.stat(tmp_path / "s" / "optuna.db").st_mtime_ns
    second = write_mirror(fs, "s", STUDY, trials)

    assert first.created and (second.added, second.rebuilt, second.created) == (0, False, False)
    assert os.stat(tmp_path / "s" / "optuna.db").st_mtime_ns == mtime  # unchanged: no upload
    values = [t.value for t in _db(tmp_path / "s").trials]
    assert values == [0.625, 0.25, None]
    assert os.listdir(tmp_path / "s") == ["optuna.db"]


def test_optuna_dashboard_and_visualization_open_the_file(tmp_path):
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard as dashboard

    write_mirror(pafs.LocalFileSystem(), str(tmp_path), STUDY, mirror_trials(MIRROR, _views()))
    url = storage_url(str(tmp_path / "optuna.db"))
    app = dashboard.wsgi(url)

    def get(path: str) -> dict:
        environ = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
        assert status == ["200 OK"], (path, status, body[:300])
        return json.loads(body)

    (summary,) = get("/api/studies")["study_summaries"]
    assert summary["study_name"] == "mirror"
    detail = get(f"/api/studies/{summary['study_id']}")
    assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete", "Fail"]
    assert detail["best_trials"][0]["values"] == [0.625]
    figure = optuna.visualization.plot_optimization_history(_db(tmp_path))
    assert list(figure.data[0].y) == [0.625, 0.25]
    assert np.isclose(max(figure.data[1].y), 0.625)


def test_the_mirror_spells_the_repeaters_seed_key_as_tune_does():
    from ray.tune.search.repeater import TRIAL_INDEX as TUNE_TRIAL_INDEX

    from orchestrator.tune.internals import TRIAL_INDEX

    assert TRIAL_INDEX == TUNE_TRIAL_INDEX
