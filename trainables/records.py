"""The per-epoch record: what the training loop yields and the trainable reports to Tune.

One record per epoch (0-based `epoch`), a flat dict of JSON scalars except `units_removed`
(a dict of layer name -> units removed at this epoch's event). Accuracies are fractions in
[0, 1]; losses are mean cross-entropy in nats; times are seconds.

The `results` package reads exactly these keys (it never imports this module's code paths that
need torch; this module is stdlib-only so it can).
"""

from __future__ import annotations

from typing import Any

# Always present.
CORE_KEYS: tuple[str, ...] = (
    "epoch",  # 0-based epoch index; for IMP, counts epochs across rounds
    "train_loss",  # mean training loss over the epoch's batches (running, as the papers log it)
    "train_acc",  # running training-batch accuracy over the epoch
    "test_loss",
    "test_acc",  # test accuracy after this epoch's event, if any (the post-pruning accuracy)
    "sparsity",  # fraction of prunable parameters masked (zeroed for good) after the event
    "lr",  # learning rate used for this epoch's training
    "epoch_time_s",
    "is_event",  # True when units were pruned/perturbed at this epoch
    "status",  # "running" | "done" | "diverged" (the last record of a trial is done/diverged)
)

# Present when the corresponding feature is on (None otherwise).
OPTIONAL_KEYS: tuple[str, ...] = (
    "val_loss",
    "val_acc",  # when dataset.validation_fraction > 0
    "acc_before",  # event epochs: eval accuracy right before the event
    "acc_after",  # event epochs: eval accuracy right after the event (== test_acc)
    "instability",  # event epochs: (acc_before - acc_after) / acc_before
    "units_removed",  # event epochs: {layer: units} targeted at this event
    "units_removed_total",
    "pruning_rate",  # schedule trials: percent of the most-pruned layer's units per event
    "num_events",  # schedule trials: the schedule's number of event epochs
    "imp_round",  # IMP: the round this epoch belongs to (0 = dense)
    "train_acc_noisy",  # label noise: accuracy on the relabelled subset (w.r.t. noisy labels)
    "train_acc_clean",  # label noise: accuracy on the untouched subset
    "hessian_topk_sum",  # flatness epochs
    "grad_noise_trace",
    "eps_flatness",
    "flatness_time_s",
    "per_example_loss_file",  # relative path of a float16 .npy beside the checkpoint
)

RECORD_KEYS: tuple[str, ...] = CORE_KEYS + OPTIONAL_KEYS


def empty_record(epoch: int) -> dict[str, Any]:
    """A record with every key present: core keys to be filled, optional keys None."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(epoch=epoch, is_event=False, status="running")
    return record


def event_instability(acc_before: float, acc_after: float) -> float:
    """Relative accuracy drop of one event (Bartoldson et al.; can be negative).

    0 when acc_before is 0 (nothing to lose), so a degenerate model never yields inf/NaN.
    """
    if acc_before <= 0.0:
        return 0.0
    return (acc_before - acc_after) / acc_before
