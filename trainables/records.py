"""The per-epoch record: every key the training loop reports, typed once.

One record per epoch (0-based ``epoch``). :data:`RECORD` defines each key once: its name, its
Arrow type (as a plain type tag, so this module stays stdlib-only and ``results`` can build its
Parquet schemas from it without importing torch), its unit and its meaning. The loop fills
:func:`empty_record`; ``results.tables.schema`` stores every key (``epochs.parquet``, and the per-layer
lists in ``events.parquet`` / ``layer_events.parquet``); a test ties the two, so a key recorded
here always reaches a table.

Accuracies are fractions in [0, 1]; losses are mean cross-entropy in nats; times are seconds.
An epoch's numbers, ``*_after`` keys aside, describe one model (:func:`measured_before_event`).

Some keys are facts about the whole trial (``per_trial``): the schedule's pruning rate, and where
the trial really ran (device, torch build, threads, model size). They are reported on every
epoch, so a trial resumed elsewhere says so from then on; ``trials.parquet`` keeps the last
reported value of each (``results.tables.summarize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Type tags: a scalar name, or ("list", item) / ("struct", ((name, type), ...)). results.tables.schema
# maps them to pyarrow types.
INT, FLOAT, BOOL, STR = "int64", "float64", "bool", "string"
Type = str | tuple


def list_of(item: Type) -> tuple:
    return ("list", item)


def struct(**fields: Type) -> tuple:
    return ("struct", tuple(fields.items()))


@dataclass(frozen=True)
class RecordField:
    """One key of the per-epoch record."""

    name: str
    type: Type
    unit: str  # "" when dimensionless and not a fraction
    meaning: str
    always: bool = False  # set on every epoch (else only when its feature is on)
    per_trial: bool = False  # one value per trial: also a trials.parquet column (the last one)


def _trial_fact(name: str, tag: Type, unit: str, meaning: str) -> RecordField:
    """A per-trial key the loop sets on every epoch."""
    return RecordField(name, tag, unit, meaning, always=True, per_trial=True)


# The units one event removed (or targeted) in each layer, in the model's layer order.
LAYER_UNITS = list_of(struct(layer=STR, units=INT))
# Perturbation windows that closed during an epoch (trainables.pruning.windows.Window.report):
# the layer, the epoch of the event that opened it, the training steps it lasted, why it closed
# (duration | own_event | trial_end) and the passes it perturbed on training / test batches.
WINDOWS = list_of(
    struct(
        layer=STR,
        event_epoch=INT,
        window_steps=INT,
        closed_by=STR,
        noise_draws_train=INT,
        noise_draws_eval=INT,
    )
)

RECORD: tuple[RecordField, ...] = (
    RecordField("epoch", INT, "epoch", "0-based epoch index (IMP: counted across rounds)", True),
    # Null on the one epoch that does not train (scratch pruning's epoch 0).
    RecordField("train_loss", FLOAT, "nats", "mean training loss over the epoch's batches"),
    RecordField("train_acc", FLOAT, "fraction", "running training-batch accuracy"),
    RecordField("test_loss", FLOAT, "nats", "test loss of the measured model", True),
    RecordField("test_acc", FLOAT, "fraction", "test accuracy of the measured model", True),
    RecordField("sparsity", FLOAT, "fraction", "prunable weights masked, measured model", True),
    RecordField("lr", FLOAT, "", "learning rate this epoch trained with", True),
    RecordField("epoch_time_s", FLOAT, "s", "wall time of the epoch", True),
    RecordField("is_event", BOOL, "", "units were pruned or perturbed after this epoch", True),
    RecordField(
        "status", STR, "", "running | done | diverged (the last record: done/diverged)", True
    ),
    RecordField("val_loss", FLOAT, "nats", "validation loss of the measured model"),
    RecordField("val_acc", FLOAT, "fraction", "validation accuracy of the measured model"),
    RecordField("acc_before", FLOAT, "fraction", "event epochs: test accuracy before the event"),
    RecordField("acc_after", FLOAT, "fraction", "event epochs: test accuracy after it"),
    RecordField("test_loss_after", FLOAT, "nats", "event epochs: test loss after the event"),
    RecordField("sparsity_after", FLOAT, "fraction", "event epochs: weights masked after it"),
    RecordField("instability", FLOAT, "", "event epochs: (acc_before - acc_after) / acc_before"),
    RecordField("units_removed", LAYER_UNITS, "units", "event epochs: units per layer"),
    RecordField("pruned_score", FLOAT, "", "schedule events: event_score of chosen units"),
    RecordField("units_removed_total", INT, "units", "event epochs: units over all layers"),
    RecordField("windows_closed", WINDOWS, "", "perturbation: windows that closed this epoch"),
    RecordField("pruning_rate", FLOAT, "%", "% of the most-pruned layer per event", per_trial=True),
    RecordField(
        "num_events", INT, "events", "the schedule's number of event epochs", per_trial=True
    ),
    RecordField("imp_round", INT, "round", "IMP: the round of this epoch (0 = dense)"),
    RecordField("train_acc_noisy", FLOAT, "fraction", "label noise: measured model, relabelled"),
    RecordField("train_acc_clean", FLOAT, "fraction", "label noise: measured model, untouched"),
    RecordField("hessian_topk_sum", FLOAT, "", "flatness epochs: sum of top-k Hessian eigenvalues"),
    RecordField("grad_noise_trace", FLOAT, "", "flatness epochs: Tr(C), mean squared grad norm"),
    RecordField("eps_flatness", FLOAT, "", "flatness epochs: epsilon (0.01 grid) at the rise"),
    RecordField("eps_flatness_bisect", FLOAT, "", "flatness epochs: the same epsilon, bisected"),
    RecordField("flatness_time_s", FLOAT, "s", "flatness epochs: time of the measurement"),
    RecordField("per_example_loss_file", STR, "", "per-example losses: .npy beside the checkpoint"),
    # Where the trial ran and what it trained (trainables.provenance.run_facts), every epoch.
    _trial_fact("device", STR, "", "cpu, or cuda:<GPU name> (e.g. cuda:NVIDIA H200)"),
    _trial_fact("torch_version", STR, "", "torch.__version__ in the trial's process"),
    _trial_fact("threads", INT, "threads", "torch.get_num_threads() in the trial's process"),
    _trial_fact("n_params", INT, "parameters", "every parameter of the built model"),
    _trial_fact(
        "n_prunable", INT, "units", "prunable layers' units (filter) or weights (weight, IMP)"
    ),
)

RECORD_KEYS: tuple[str, ...] = tuple(f.name for f in RECORD)
# A report to Tune may carry several epochs (``trainables.tune_trainable``): the newest epoch's
# record, plus the earlier epochs' records, oldest first, under this key.
BATCH_KEY = "earlier_epochs"
# The flatness measures (their last measured value is a trial-level outcome).
FLATNESS_KEYS: tuple[str, ...] = ("hessian_topk_sum", "grad_noise_trace", "eps_flatness")
FIELDS: dict[str, RecordField] = {f.name: f for f in RECORD}
# The per-trial keys (RecordField.per_trial), in record order.
PER_TRIAL_KEYS: tuple[str, ...] = tuple(f.name for f in RECORD if f.per_trial)


def measured_before_event(method: str) -> bool:
    """Whether an event epoch's record measures the model before its event: IMP's (OpenLTH
    evaluates each level's trained model, then prunes); schedules' after it (Bartoldson et al.)."""
    return method == "imp"


def empty_record(epoch: int) -> dict[str, Any]:
    """A record with every key present: the always-set keys to be filled, the others None."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(epoch=epoch, is_event=False, status="running")
    return record


def layer_units(units: dict[str, int]) -> list[dict[str, Any]]:
    """``{layer: units}`` as the record's ``units_removed`` value (:data:`LAYER_UNITS`)."""
    return [{"layer": layer, "units": int(n)} for layer, n in units.items()]


def event_instability(acc_before: float, acc_after: float) -> float:
    """Relative accuracy drop of one event (Bartoldson et al.; can be negative).

    0 when acc_before is 0 (nothing to lose), so a degenerate model never yields inf/NaN.
    """
    if acc_before <= 0.0:
        return 0.0
    return (acc_before - acc_after) / acc_before
