"""One trial's outcome from its per-epoch records (pure numpy; no Ray, no pyarrow).

Definitions (Bartoldson et al.'s official ``figures_and_tables/utils.py``; docs/reproducing.md):

- event instability ``(acc_before - acc_after) / acc_before`` as recorded; ``mean_instability`` is
  its mean over the trial's events, 0 for an unpruned trial by definition, null for a pruned trial
  without events; ``mean_stability = 100 * (1 - mean_instability)``;
- only the events the official analysis counts as pruned epochs enter ``mean_instability`` and
  start the ``best_after_last_event`` window (:func:`counted_events`: the chosen units' official
  pruned score is > 0; an E[BN] ``smallest`` event that removes only channels of score 0 does not
  count); a pruned trial whose every event is uncounted has instability 0, as the official
  analysis gives stability 100 to a run without pruned epochs;
- a scratch trial (``pruning.scratch``: pruned at initialisation, before any training) has
  instability 0 (stability 100) by definition, as the official ``add_pruning_status_vars`` treats
  an event at the first epoch as no pruned epoch; its event stays in the records, ``n_events``
  and ``last_event_epoch`` (0, so its generalization window is every epoch, as the official one);
- every number of a row is the *measured model*'s (``trainables.records``): the model after the
  epoch's event, or, for IMP, before it, so an IMP level-end row is that level's trained model
  (OpenLTH evaluates each level, then prunes) and its train, test, validation and noisy/clean
  accuracies, losses and sparsity all belong to it;
- generalization, by the config's measure: ``best_after_last_event`` = the best test accuracy at
  or after the last counted event epoch (all epochs when there is none; for IMP strictly after
  it, the event epoch's row being the model before the event), the earliest such epoch on ties;
  ``final`` = the last epoch's test accuracy; ``val_selected`` = the test accuracy at the epoch of
  the best validation accuracy (earliest on ties; null without a validation split), chosen for
  an IMP trial among the epochs that end a sparsity level only (:func:`level_end_rows`);
- ``gen_gap`` = train accuracy - test accuracy at the generalization epoch (for IMP both belong
  to the level's trained model, before the event);
- ``pruning_rate``: the rate the trainable recorded (record key ``pruning_rate``: percent of the
  most-pruned layer's units removed per event; 0 unpruned; ``100 * imp.fraction`` for IMP);
  null until the trial has reported. Every per-trial record key (``RecordField.per_trial``:
  ``pruning_rate``, ``num_events``, ``device``, ``torch_version``, ``threads``, ``n_params``,
  ``n_prunable``) is the last value the trial reported: null when it never reported one (a study
  written before the key existed exports with the column null).

Generalization, gen_gap and the training-accuracy covariate are only set for ``ok`` trials:
a diverged, failed or unfinished run has no final model to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainables.config import TrialConfig
from trainables.records import FIELDS, FLATNESS_KEYS, INT, PER_TRIAL_KEYS, measured_before_event

# The per-epoch columns :func:`summarize` reads.
INPUT_KEYS = (
    "epoch", "is_event", "status", "instability", "pruned_score", "sparsity", "test_acc", "val_acc",
    "train_acc",
    "train_acc_noisy", "train_acc_clean", "time_total_s", "node_ip", "hostname", "imp_round",
    *FLATNESS_KEYS, *PER_TRIAL_KEYS,
)  # fmt: skip


def generalization(
    measure: str,
    test_acc: np.ndarray,
    val_acc: np.ndarray,
    epoch: np.ndarray,
    last_event_epoch: int | None,
    selectable: np.ndarray | None = None,
    before_event: bool = False,
) -> int | None:
    """Row index of the generalization epoch (None when undefined). Arrays: (n_epochs,), NaN=null;
    ``selectable``: bool (n_epochs,), the rows ``val_selected`` may choose (None = all);
    ``before_event``: an event epoch's row measures the model before its event
    (``trainables.records.measured_before_event``), so "after the last event" starts one row
    later."""
    if measure == "final":
        return len(test_acc) - 1 if len(test_acc) and np.isfinite(test_acc[-1]) else None
    if measure == "val_selected":
        allowed = np.isfinite(test_acc)
        return _argmax(val_acc, allowed if selectable is None else allowed & selectable)
    window = np.isfinite(test_acc)
    if last_event_epoch is not None:
        window &= epoch > last_event_epoch if before_event else epoch >= last_event_epoch
    return _argmax(test_acc, window)


def counted_events(is_event: np.ndarray, pruned_score: np.ndarray) -> np.ndarray:
    """bool (n_epochs,): the events the official analysis counts as pruned epochs, those whose
    ``pruned_score`` (``trainables.pruning.scores.event_score``) is > 0; an event without one
    (IMP, or records written before the key existed; NaN) counts."""
    return is_event & ~(pruned_score <= 0)


def level_end_rows(imp_round: np.ndarray) -> np.ndarray:
    """bool (n_epochs,): the rows that end a sparsity level, i.e. the last epoch of every
    ``imp_round`` (records sorted by epoch; NaN = not an IMP epoch, never a level end).

    This is the method's ``level_ends()`` read back from the records: an IMP level is one round
    of the plan (``trainables.pruning.rounds.ImpPlan.round_end_epochs``), and OpenLTH evaluates
    each level's final model; a test ties the two definitions.
    """
    following = np.append(imp_round[1:], np.nan)
    return np.isfinite(imp_round) & (imp_round != following)


def selectable_rows(cols: Mapping[str, np.ndarray], cfg: TrialConfig) -> np.ndarray | None:
    """The rows ``val_selected`` may choose: None (all) unless ``cfg`` is an IMP trial, whose
    candidates are its level ends (:func:`level_end_rows`); for the ``sparse_from_start``
    control only the last one, the end of the control phase (the rounds before it replay the
    matched IMP trial and are not the control's models)."""
    if cfg.pruning.method != "imp":
        return None
    imp_round = cols["imp_round"]
    ends = level_end_rows(imp_round)
    if cfg.pruning.imp.control == "sparse_from_start" and ends.any():
        ends &= imp_round == imp_round[ends].max()
    return ends


def _argmax(values: np.ndarray, allowed: np.ndarray) -> int | None:
    ok = allowed & np.isfinite(values)
    if not ok.any():
        return None
    masked = np.where(ok, values, -np.inf)
    return int(np.argmax(masked))  # first maximum: the earliest epoch on ties


def summarize(cols: Mapping[str, np.ndarray], cfg: TrialConfig, status: str) -> dict[str, Any]:
    """The derived per-trial values of trials.parquet (names as in ``results.tables.schema``).

    `cols` holds one trial's de-duplicated records sorted by epoch: float arrays (NaN = null)
    for numeric keys, a bool array ``is_event``, object arrays for strings.
    """
    n = len(cols["epoch"])
    out: dict[str, Any] = {"n_epochs": n}
    out.update({key: _last_reported(cols[key], FIELDS[key].type) for key in PER_TRIAL_KEYS})
    events = cols["is_event"].astype(bool) if n else np.zeros(0, dtype=bool)
    out["n_events"] = int(events.sum())
    out["last_event_epoch"] = int(cols["epoch"][events].max()) if events.any() else None
    pruned = counted_events(events, cols["pruned_score"]) if n else events
    if cfg.is_baseline or cfg.pruning.scratch or (events.any() and not pruned.any()):
        mean_instability: float | None = 0.0
    else:
        inst = cols["instability"][pruned] if n else np.zeros(0)
        inst = inst[~np.isnan(inst)]
        mean_instability = float(inst.mean()) if len(inst) else None
    out["mean_instability"] = mean_instability
    out["mean_stability"] = None if mean_instability is None else 100.0 * (1.0 - mean_instability)
    last = {k: _last(cols[k]) for k in ("sparsity", "test_acc", "train_acc", "time_total_s")}
    out.update(
        final_sparsity=last["sparsity"],
        test_acc_final=last["test_acc"],
        train_acc_final=last["train_acc"],
        train_acc_noisy_final=_last(cols["train_acc_noisy"]),
        train_acc_clean_final=_last(cols["train_acc_clean"]),
        runtime_s=last["time_total_s"],
        node_ip=_last_str(cols["node_ip"]),
        hostname=_last_str(cols["hostname"]),
    )
    for key in FLATNESS_KEYS:
        out[key] = _last_measured(cols[key])
    noise, hessian = out["grad_noise_trace"], out["hessian_topk_sum"]
    out["tic"] = noise / hessian if noise is not None and hessian else None
    out.update(generalization=None, generalization_epoch=None, gen_gap=None, control_train_acc=None)
    if status == "ok" and n:
        row = generalization(
            cfg.generalization,
            cols["test_acc"],
            cols["val_acc"],
            cols["epoch"],
            int(cols["epoch"][pruned].max()) if pruned.any() else None,
            selectable_rows(cols, cfg),
            measured_before_event(cfg.pruning.method),
        )
        if row is not None:
            out["generalization"] = float(cols["test_acc"][row])
            out["generalization_epoch"] = int(cols["epoch"][row])
            out["gen_gap"] = _finite(cols["train_acc"][row] - cols["test_acc"][row])
        noisy = cfg.dataset.label_noise_fraction > 0
        out["control_train_acc"] = out["train_acc_noisy_final"] if noisy else out["train_acc_final"]
    return out


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _last(values: np.ndarray) -> float | None:
    return _finite(values[-1]) if len(values) else None


def _last_measured(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else None


def _last_reported(values: np.ndarray, tag: object) -> Any:
    """The last non-null value of a per-trial record key: str for an object array, int for an
    int64 key, else float (None when the trial never reported one)."""
    if values.dtype == object:
        reported = [v for v in values if v is not None]
        return str(reported[-1]) if reported else None
    value = _last_measured(values)
    return int(value) if value is not None and tag == INT else value


def _last_str(values: np.ndarray) -> str | None:
    return str(values[-1]) if len(values) and values[-1] is not None else None
