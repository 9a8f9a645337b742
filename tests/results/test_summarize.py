"""Per-trial outcomes: status mapping, generalization measures, instability, pruning rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tune_fixture import config

from results.tables import summarize as S
from results.tables.status import trial_status
from trainables.config import ImpConfig, LayerSchedule, PruningConfig, TrainConfig, TrialConfig
from trainables.pruning.rounds import ImpPlan


@pytest.mark.parametrize(
    ("tune", "last", "n", "expected"),
    [
        ("TERMINATED", "done", 5, "ok"),
        ("TERMINATED", "diverged", 3, "diverged"),
        ("ERROR", "done", 5, "error"),
        ("ERROR", None, 0, "error"),
        ("TERMINATED", "running", 2, "stopped"),
        ("PENDING", "running", 2, "running"),
        ("RUNNING", "running", 2, "running"),
        ("PAUSED", "running", 2, "running"),
        ("PENDING", None, 0, "pending"),
        ("TERMINATED", None, 0, "pending"),  # ended by Ctrl-C before it ever ran
    ],
)
def test_status(tune, last, n, expected):
    assert trial_status(tune, last, n > 0) == expected


def _cols(test_acc, events=(), val_acc=None, train_acc=None):
    n = len(test_acc)
    cols = {
        k: np.full(n, np.nan)
        for k in (
            "instability",
            "pruned_score",
            "sparsity",
            "time_total_s",
            "train_acc_noisy",
            "train_acc_clean",
            "imp_round",
            *S.FLATNESS_KEYS,
        )
    }
    for key in S.PER_TRIAL_KEYS:  # text keys as object arrays, as results.tables.export reads them
        text = S.FIELDS[key].type == "string"
        cols[key] = np.full(n, None, dtype=object) if text else np.full(n, np.nan)
    cols.update(
        epoch=np.arange(n, dtype=float),
        test_acc=np.asarray(test_acc, dtype=float),
        val_acc=np.full(n, np.nan) if val_acc is None else np.asarray(val_acc, dtype=float),
        train_acc=np.full(n, 0.9) if train_acc is None else np.asarray(train_acc, dtype=float),
        is_event=np.isin(np.arange(n), events),
        node_ip=np.array(["10.0.0.1"] * n, dtype=object),
        hostname=np.array(["h"] * n, dtype=object),
    )
    cols["instability"][list(events)] = [0.1 * (i + 1) for i in range(len(events))]
    return cols


def test_best_after_last_event_takes_the_earliest_best_epoch_from_the_last_event_on():
    cols = _cols([0.5, 0.9, 0.6, 0.7, 0.8, 0.8, 0.7], events=[1, 3])
    out = S.summarize(cols, config("largest", 0), "ok")
    assert out["generalization"] == 0.8 and out["generalization_epoch"] == 4  # not the 0.9 at 1
    assert out["gen_gap"] == pytest.approx(0.1)
    assert out["mean_instability"] == pytest.approx(0.15)
    assert out["mean_stability"] == pytest.approx(85.0)
    assert out["n_events"] == 2 and out["last_event_epoch"] == 3


def official_outcome(test_acc, events, instability, pruned_score):
    """The official analysis (``figures_and_tables/utils.py``: ``add_pruning_status_vars``, then
    ``summarize``), restated over 0-based epochs: an epoch is a pruned epoch when its logged
    pruned score is > 0; mean stability is over pruned epochs (100 when there is none); the best
    test accuracy is taken from the last pruned epoch on (every epoch when there is none)."""
    pruned = [e for e, score in zip(events, pruned_score, strict=True) if score > 0]
    stab = [100 * (1 - instability[events.index(e)]) for e in pruned]
    start = max(pruned) if pruned else 0
    return (sum(stab) / len(stab) if stab else 100.0), max(test_acc[start:])


@pytest.mark.parametrize(
    ("events", "pruned_score"),
    [
        ([1, 3, 5], [0.0, 0.4, 0.2]),  # an event of score 0 does not count
        ([1, 3, 5], [0.4, 0.3, 0.0]),  # nor a last one: the window starts at epoch 3
        ([1, 3], [0.0, 0.0]),  # no pruned epoch: stability 100, every epoch
        ([1, 3], [0.5, 0.1]),
    ],
)
def test_events_count_as_pruned_only_with_a_positive_pruned_score(events, pruned_score):
    test_acc = [0.5, 0.6, 0.95, 0.7, 0.9, 0.6, 0.65]
    cols = _cols(test_acc, events=events)
    cols["pruned_score"][events] = pruned_score
    instability = [0.1 * (i + 1) for i in range(len(events))]  # as _cols records them
    out = S.summarize(cols, config("largest", 0), "ok")
    stability, best = official_outcome(test_acc, events, instability, pruned_score)
    assert out["mean_stability"] == pytest.approx(stability)
    assert out["generalization"] == best
    assert (out["n_events"], out["last_event_epoch"]) == (len(events), events[-1])  # as recorded


def test_final_and_validation_selected_measures():
    cols = _cols([0.5, 0.9, 0.6, 0.7], val_acc=[0.4, 0.5, 0.8, 0.8])
    final = dataclasses.replace(config(None, 0), generalization="final")
    val = dataclasses.replace(config(None, 0), generalization="val_selected")
    assert S.summarize(cols, final, "ok")["generalization"] == 0.7
    out = S.summarize(cols, val, "ok")
    assert (out["generalization"], out["generalization_epoch"]) == (0.6, 2)
    assert S.summarize(_cols([0.5, 0.6]), val, "ok")["generalization"] is None  # no split


def test_unpruned_trials_have_instability_zero_and_unfinished_ones_no_generalization():
    cols = _cols([0.5, 0.6, 0.7])
    base = S.summarize(cols, config(None, 0), "ok")
    assert (base["mean_instability"], base["mean_stability"]) == (0.0, 100.0)
    assert base["generalization"] == 0.7
    running = S.summarize(cols, config("largest", 0), "running")
    assert running["generalization"] is None and running["gen_gap"] is None
    assert running["mean_instability"] is None  # pruned, no event yet: unknown, not 0


def test_label_noise_controls_with_the_relabelled_subset():
    cols = _cols([0.5, 0.6])
    cols["train_acc_noisy"][:] = [0.2, 0.3]
    noisy = S.summarize(cols, config(None, 0, noise=0.2), "ok")
    clean = S.summarize(cols, config(None, 0), "ok")
    assert noisy["control_train_acc"] == 0.3
    assert clean["control_train_acc"] == 0.9


def test_pruning_rate_is_the_rate_the_trainable_recorded():
    """The rate is derived once, by the trainable (trainables.pruning.schedule.schedule_summary,
    recorded on every epoch); the aggregator only reads it."""
    defaults = dataclasses.replace(config(None, 0), pruning=PruningConfig(method="schedule"))
    cols = _cols([0.5, 0.6, 0.7])
    cols["pruning_rate"][:] = 12.5
    assert S.summarize(cols, defaults, "ok")["pruning_rate"] == 12.5
    assert S.summarize(_cols([0.5]), defaults, "running")["pruning_rate"] is None


def test_scratch_trials_are_stable_by_definition_and_keep_their_event():
    """The official ``figures_and_tables/utils.py::add_pruning_status_vars`` (and ``summarize``):
    an event at the first epoch (1-based epoch 1: scratch pruning, before any training) makes
    ``last_pruned_epoch`` 0 and no epoch a pruned epoch, so the run's mean stability is set to
    100 and its best accuracy is taken over every epoch."""
    layers = (LayerSchedule("conv1", 0.5, 0, 0),)
    scratch = dataclasses.replace(
        config(None, 0),
        pruning=PruningConfig(method="schedule", scratch=True, layers=layers),
    )
    cols = _cols([0.1, 0.9, 0.6, 0.7], events=[0])  # the event's instability is 0.1, recorded
    out = S.summarize(cols, scratch, "ok")
    assert (out["mean_instability"], out["mean_stability"]) == (0.0, 100.0)
    assert (out["n_events"], out["last_event_epoch"]) == (1, 0)
    assert (out["generalization"], out["generalization_epoch"]) == (0.9, 1)  # every epoch
    pruned_at_0 = dataclasses.replace(
        scratch, pruning=dataclasses.replace(scratch.pruning, scratch=False)
    )
    assert S.summarize(cols, pruned_at_0, "ok")["mean_instability"] == pytest.approx(0.1)


def _imp(control="none", rounds=2, epochs=3, **imp) -> TrialConfig:
    """A val_selected IMP trial config (T = ``epochs`` per round)."""
    cfg = dataclasses.replace(config(None, 0), generalization="val_selected")
    return dataclasses.replace(
        cfg,
        train=TrainConfig(epochs=epochs),
        pruning=PruningConfig(
            method="imp",
            granularity="weight",
            imp=ImpConfig(rounds=rounds, control=control, **imp),
        ),
    )


def _imp_cols(cfg, val_acc, test_acc):
    plan = ImpPlan.of(cfg)
    cols = _cols(test_acc, events=plan.prune_epochs, val_acc=val_acc)
    cols["imp_round"] = np.array([plan.locate(e)[0] for e in range(plan.total_epochs)], float)
    return cols


def test_imp_val_selected_chooses_among_the_models_that_end_a_level():
    """OpenLTH evaluates each level's final model: the best validation epoch mid-round (epoch 1,
    val 0.99) is not a candidate; level ends are epochs 2, 5, 8 (val 0.6, 0.8, 0.7)."""
    cfg = _imp()
    val = [0.1, 0.99, 0.6, 0.2, 0.3, 0.8, 0.4, 0.5, 0.7]
    test = [0.1, 0.9, 0.55, 0.2, 0.3, 0.75, 0.4, 0.5, 0.65]
    out = S.summarize(_imp_cols(cfg, val, test), cfg, "ok")
    assert (out["generalization"], out["generalization_epoch"]) == (0.75, 5)
    unpruned = dataclasses.replace(cfg, pruning=PruningConfig())  # no levels: every epoch
    assert S.summarize(_imp_cols(cfg, val, test), unpruned, "ok")["generalization_epoch"] == 1


def test_sparse_from_start_selects_the_end_of_its_control_phase():
    cfg = _imp(control="sparse_from_start", rounds=1, epochs=2)  # rounds 0, 1; control phase 2
    val = [0.1, 0.9, 0.2, 0.8, 0.3, 0.4]
    test = [0.1, 0.85, 0.2, 0.75, 0.3, 0.35]
    out = S.summarize(_imp_cols(cfg, val, test), cfg, "ok")
    assert (out["generalization"], out["generalization_epoch"]) == (0.35, 5)


def test_imp_best_after_last_event_starts_after_the_event_epochs_trained_model():
    """An IMP event epoch's row is the level's trained model, before the prune: "best after the
    last event" is the best of the rows after it (the last level), not that row; and the gap is
    taken within one model's row."""
    cfg = dataclasses.replace(_imp(rounds=1, epochs=2), generalization="best_after_last_event")
    test = [0.5, 0.8, 0.6, 0.7]  # epoch 1: level 0's trained model (the event's acc_before)
    cols = _imp_cols(cfg, [0.1] * 4, test)
    cols["train_acc"] = np.array([0.6, 0.95, 0.7, 0.9])
    out = S.summarize(cols, cfg, "ok")
    assert (out["generalization"], out["generalization_epoch"]) == (0.7, 3)
    assert out["gen_gap"] == pytest.approx(0.9 - 0.7)
    schedule = dataclasses.replace(config("smallest", 0), generalization="best_after_last_event")
    out = S.summarize(_cols(test, events=[1]), schedule, "ok")  # row 1: after its event
    assert out["generalization_epoch"] == 1


@pytest.mark.parametrize(
    "imp",
    [
        {},
        {"rewind": "weight", "rewind_epoch": 1},
        {"control": "extended_dense"},
        {"control": "sparse_from_start"},
    ],
)
def test_level_end_rows_are_the_methods_level_ends(imp):
    """results reads the level ends back from ``imp_round``; they are exactly the epochs the IMP
    plan ends its rounds at (what ``ImpPruning.level_ends()`` reports)."""
    plan = ImpPlan.of(_imp(rounds=3, epochs=4, **imp))
    imp_round = np.array([plan.locate(e)[0] for e in range(plan.total_epochs)], dtype=float)
    assert tuple(np.flatnonzero(S.level_end_rows(imp_round))) == plan.round_end_epochs
    assert not S.level_end_rows(np.full(5, np.nan)).any()  # not an IMP trial: no levels


def test_per_trial_keys_are_the_last_value_reported():
    """A trial resumed on another node reports from there on: the trials row says where it
    finished. Ints stay ints; a key never reported (a study older than it) is null."""
    cols = _cols([0.5, 0.6, 0.7])
    cols["device"] = np.array(["cpu", "cpu", "cuda:NVIDIA H200"], dtype=object)
    cols["threads"] = np.array([2.0, 2.0, np.nan])  # the last epoch's report lost: the one before
    cols["n_params"] = np.array([906.0, 906.0, 906.0])
    out = S.summarize(cols, config(None, 0), "ok")
    assert out["device"] == "cuda:NVIDIA H200"
    assert out["threads"] == 2 and type(out["threads"]) is int
    assert out["n_params"] == 906 and type(out["n_params"]) is int
    assert out["torch_version"] is None and out["n_prunable"] is None
