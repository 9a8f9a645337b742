"""The report's per-epoch and per-round panels (pure): noise arms and IMP controls.

- :func:`noise_panel` (Bartoldson et al. 2020, Fig. 5 / D2): test accuracy per epoch, averaged
  over seeds (mean and standard error), of each perturbation arm (ok pruned trials whose
  ``pruning_perturbation_mode`` is not ``none``; one curve per ``config_key``), next to the
  pruning reference (ok pruned trials without perturbation: Prune_L in the paper) and the
  unpruned baselines. One group per (mode, variant): zeroing / gaussian with ``iter`` are Fig. 5's
  two plots, ``cumulative`` zeroing is Fig. D2's.
- :func:`imp_panel` (Jin et al. 2022): per ok IMP trial (``pruning_method`` imp) and sparsity
  level, the test error, training loss and sparsity of the level's trained model, averaged per
  ``config_key`` (one curve per configuration: ``pruning_imp_control`` x rewinding x ...), and
  its training accuracy on the relabelled (``train_acc_noisy``) and untouched
  (``train_acc_clean``) examples; one column of the figure per label-noise level, so IMP,
  extended dense training and sparse-from-start stand side by side at each noise level.

A level's numbers are its level-end row's (:func:`results.tables.summarize.level_end_rows`, the rows
``val_selected`` chooses from): an IMP event epoch's record measures the level's trained model
before the prune (``trainables.records.measured_before_event``), so test error, training loss,
noisy/clean accuracies and sparsity all belong to one model, the one OpenLTH evaluates per level.
``train_loss`` is the level's last epoch's mean training-batch loss (train mode, the labels
trained on). Extended dense training masks nothing; its level r is placed at the sparsity IMP
reaches after r rounds, ``1 - (1 - pruning_imp_fraction) ** r`` (to one weight per round). A
sparse-from-start trial contributes its last phase only (the final mask trained from
initialisation; its earlier rounds repeat IMP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from results.fits.aggregate import trial_kinds
from results.report.base import config_label, varying_fields
from results.tables.summarize import level_end_rows

NOISE_FIELDS = (
    "pruning_perturbation_mode",
    "pruning_perturbation_variant",
    "pruning_perturbation_steps",
    "pruning_perturbation_restore",
)
NOISE_FIGURES = {"iter": "Fig. 5", "cumulative": "Fig. D2"}
NOISE_COLUMN = "dataset_label_noise_fraction"  # the IMP panel's columns
ROUND_KEYS = (
    "imp_round",
    "sparsity",
    "test_acc",
    "train_loss",
    "train_acc_noisy",
    "train_acc_clean",
)


@dataclass(frozen=True)
class MeanCurve:
    label: str
    role: str  # unpruned | reference | arm
    n: int  # trials averaged
    epoch: np.ndarray  # (n_epochs,)
    mean: np.ndarray  # test accuracy
    sem: np.ndarray  # standard error of the mean over trials (NaN with one trial)


@dataclass(frozen=True)
class NoiseGroup:
    title: str  # "zeroing, iter (Fig. 5)"
    curves: tuple[MeanCurve, ...]  # unpruned, references, then the arms


@dataclass(frozen=True)
class RoundCurve:
    label: str  # the configuration, label noise left out (the figure's column says it)
    control: str  # none | extended_dense | sparse_from_start
    noise: float  # dataset_label_noise_fraction: the figure column
    n: int
    round: np.ndarray  # (n_rounds,)
    sparsity: np.ndarray  # mean over the trials
    test_error: np.ndarray
    train_loss: np.ndarray
    train_acc_noisy: np.ndarray  # NaN without label noise
    train_acc_clean: np.ndarray


@dataclass(frozen=True)
class ImpPanel:
    curves: tuple[RoundCurve, ...]
    noise_levels: tuple[float, ...]  # the figure's columns, ascending
    has_noise: bool  # some curve has train_acc_noisy


def _noise_masks(cols) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arms, references, unpruned) among ok trials."""
    ok = cols["status"] == "ok"
    kind = trial_kinds(cols)
    perturbed = cols["pruning_perturbation_mode"] != "none"
    pruned = ok & (kind == "pruned")
    return pruned & perturbed, pruned & ~perturbed, ok & (kind == "unpruned")


def curve_trials(cols: dict[str, np.ndarray]) -> list[str]:
    """Trial ids whose epochs the noise and IMP panels read (none without those dimensions)."""
    arms, refs, base = _noise_masks(cols)
    use = arms | refs | base if arms.any() else np.zeros(len(arms), dtype=bool)
    use |= (cols["status"] == "ok") & (cols["pruning_method"] == "imp")
    return [str(t) for t in cols["trial_id"][use]]


def _epoch_arrays(epochs: pa.Table, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {"trial_id": np.asarray(epochs.column("trial_id").to_pylist(), dtype=object)}
    for k in ("epoch", *keys):
        out[k] = epochs.column(k).cast(pa.float64()).to_numpy(zero_copy_only=False)
    out["is_event"] = np.asarray(epochs.column("is_event").fill_null(False).to_pylist(), bool)
    return out


def _by_config(cols, mask: np.ndarray) -> list[np.ndarray]:
    keys = cols["config_key"][mask]
    return [np.flatnonzero(mask & (cols["config_key"] == k)) for k in sorted(set(keys))]


def trial_rows(trial_id: np.ndarray) -> dict[str, np.ndarray]:
    """Each trial id's row indices in `trial_id` ((n_rows,)), ascending: one sort for a panel
    instead of a scan of every row per trial."""
    order = np.argsort(trial_id, kind="stable")  # stable: a trial's rows stay ascending
    ids, first = np.unique(trial_id[order], return_index=True)
    parts = np.split(order, first[1:]) if len(ids) else []  # no rows: no trial
    return dict(zip(ids, parts, strict=True))


_NO_ROWS = np.zeros(0, dtype=np.intp)


def _mean_curve(ep, by_trial, ids: list[str], label: str, role: str) -> MeanCurve:
    per_trial = [by_trial.get(tid, _NO_ROWS) for tid in ids]
    epochs = np.unique(ep["epoch"][np.concatenate([_NO_ROWS, *per_trial])])
    acc = np.full((len(ids), len(epochs)), np.nan)
    for i, m in enumerate(per_trial):
        acc[i, np.searchsorted(epochs, ep["epoch"][m])] = ep["test_acc"][m]
    n = np.isfinite(acc).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(acc, axis=0) / n
        sd = np.sqrt(np.nansum((acc - mean) ** 2, axis=0) / (n - 1))
        sem = np.where(n > 1, sd / np.sqrt(n), np.nan)
    return MeanCurve(label, role, len(ids), epochs, mean, sem)


def noise_panel(cols: dict[str, np.ndarray], epochs: pa.Table) -> tuple[NoiseGroup, ...]:
    """Fig. 5 / D2 groups (module docstring); () without a perturbation arm."""
    arms, refs, base = _noise_masks(cols)
    if not arms.any():
        return ()
    ep = _epoch_arrays(epochs, ("test_acc",))
    by_trial = trial_rows(ep["trial_id"])
    others = [f for f in varying_fields(cols) if f not in NOISE_FIELDS]

    def curves(mask: np.ndarray, role: str) -> list[MeanCurve]:
        out = []
        for members in _by_config(cols, mask):
            label = _noise_label(cols, members[0], others, role)
            ids = [str(t) for t in cols["trial_id"][members]]
            out.append(_mean_curve(ep, by_trial, ids, label, role))
        return sorted(out, key=lambda c: c.label)

    shared = curves(base, "unpruned") + curves(refs, "reference")
    mode, variant = cols["pruning_perturbation_mode"], cols["pruning_perturbation_variant"]
    groups = []
    for m, v in sorted(set(zip(mode[arms], variant[arms], strict=True))):
        arm_curves = curves(arms & (mode == m) & (variant == v), "arm")
        title = f"{m}, {v} ({NOISE_FIGURES.get(v, 'noise')})"
        groups.append(NoiseGroup(title, tuple(shared + arm_curves)))
    return tuple(groups)


def _noise_label(cols, i: int, others: list[str], role: str) -> str:
    """'no pruning', 'pruning reference' or 'zeroing 50 steps, restore', plus the other fields
    that vary in the study."""
    if role == "unpruned":
        return config_label(cols, i, others)  # "no pruning[, field=value ...]"
    if role == "reference":
        head = "pruning reference"
    else:
        steps = int(cols["pruning_perturbation_steps"][i])
        restore = ", restore" if cols["pruning_perturbation_restore"][i] else ""
        head = f"{cols['pruning_perturbation_mode'][i]} {steps} steps{restore}"
    return f"{head} ({config_label(cols, i, others)})" if others else head


def trial_rounds(
    ep: dict[str, np.ndarray], trial_id: str, rows: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One IMP trial's levels (module docstring): round, sparsity, test_error, train_loss,
    noisy, clean, each its level-end row's.

    `rows`: the trial's row indices in `ep`, ascending (:func:`trial_rows`); found by a scan of
    ``ep["trial_id"]`` when None.
    """
    m = np.flatnonzero(ep["trial_id"] == trial_id) if rows is None else rows
    m = m[np.argsort(ep["epoch"][m], kind="stable")]
    ends = m[level_end_rows(ep["imp_round"][m])]
    return {
        "round": ep["imp_round"][ends],
        "sparsity": ep["sparsity"][ends],
        "test_error": 1.0 - ep["test_acc"][ends],
        "train_loss": ep["train_loss"][ends],
        "noisy": ep["train_acc_noisy"][ends],
        "clean": ep["train_acc_clean"][ends],
    }


def imp_panel(cols: dict[str, np.ndarray], epochs: pa.Table) -> ImpPanel | None:
    """Jin et al.'s curves (module docstring); None without an ok IMP trial."""
    imp = (cols["status"] == "ok") & (cols["pruning_method"] == "imp")
    if not imp.any():
        return None
    ep = _epoch_arrays(epochs, ROUND_KEYS)
    by_trial = trial_rows(ep["trial_id"])
    fields = [f for f in varying_fields(cols) if f != NOISE_COLUMN]
    curves = []
    for members in _by_config(cols, imp):
        i = members[0]
        control = str(cols["pruning_imp_control"][i])
        per_trial = [
            trial_rounds(ep, str(t), by_trial.get(str(t), _NO_ROWS))
            for t in cols["trial_id"][members]
        ]
        n_rounds = min(len(t["round"]) for t in per_trial)
        mean = {k: np.mean([t[k][:n_rounds] for t in per_trial], axis=0) for k in per_trial[0]}
        if control == "extended_dense":
            mean["sparsity"] = 1 - (1 - cols["pruning_imp_fraction"][i]) ** mean["round"]
        keep = slice(n_rounds - 1, n_rounds) if control == "sparse_from_start" else slice(None)
        curves.append(
            RoundCurve(
                config_label(cols, i, fields), control, float(cols[NOISE_COLUMN][i]),
                len(members), mean["round"][keep], mean["sparsity"][keep],
                mean["test_error"][keep], mean["train_loss"][keep], mean["noisy"][keep],
                mean["clean"][keep],
            )
        )  # fmt: skip
    has_noise = any(np.isfinite(c.train_acc_noisy).any() for c in curves)
    levels = tuple(sorted({c.noise for c in curves}))
    return ImpPanel(tuple(curves), levels, has_noise)
