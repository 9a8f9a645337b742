"""The trainable's report batches, on a fake clock and a fake Tune: which epochs go into which
report to Tune, and which reports carry a checkpoint (``trainables.tune_trainable`` docstring)."""

from __future__ import annotations

import contextlib
import types

import pytest

from trainables import tune_trainable
from trainables.config import TrialConfig
from trainables.records import BATCH_KEY, empty_record


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class _Runner:
    """A trial of `epochs` epochs from `start`, each `epoch_s` seconds on `clock`."""

    def __init__(self, clock: _Clock, start: int, epochs: int, epoch_s: float) -> None:
        self.clock, self.start, self.epochs, self.epoch_s = clock, start, epochs, epoch_s
        self.epoch, self.finished = start - 1, False

    def run(self):
        for epoch in range(self.start, self.epochs):
            self.clock.now += self.epoch_s
            self.epoch, self.finished = epoch, epoch == self.epochs - 1
            yield {**empty_record(epoch), "test_acc": epoch / 100}


def _reports(monkeypatch, config: dict, epoch_s: float, start: int = 0) -> list[tuple]:
    """Run ``train_fn``; return its reports as (epochs in the report, epoch of the checkpoint
    that goes with it or None)."""
    clock, reports, saved = _Clock(), [], {}
    runner = _Runner(clock, start, TrialConfig().train.epochs, epoch_s)

    def report(result, checkpoint=None):
        earlier = [r["epoch"] for r in result.get(BATCH_KEY, ())]
        assert set(result) - {BATCH_KEY} == set(empty_record(0)), result.keys()
        reports.append((tuple(earlier) + (result["epoch"],), checkpoint))

    class Checkpoint:
        @staticmethod
        def from_directory(directory):
            return saved[directory]

        @contextlib.contextmanager
        def as_directory(self):
            yield "restored"

    def save_state(r, directory):
        saved[directory] = r.epoch

    class Runner:  # TrialRunner as the trainable uses it
        def __new__(cls, cfg, device, num_threads):
            assert start == 0
            return runner

        @staticmethod
        def from_checkpoint(directory, device, num_threads):
            assert directory == "restored" and start > 0
            return runner

    fake_tune = types.SimpleNamespace(
        report=report, Checkpoint=Checkpoint, get_checkpoint=lambda: None
    )
    monkeypatch.setattr(tune_trainable, "tune", fake_tune)
    monkeypatch.setattr(tune_trainable, "time", clock)
    monkeypatch.setattr(tune_trainable, "TrialRunner", Runner)
    monkeypatch.setattr(tune_trainable, "save_state", save_state)
    monkeypatch.setattr(tune_trainable, "assigned_resources", lambda: ("cpu", 1))
    monkeypatch.setattr(tune_trainable, "_newest_first", lambda _: [Checkpoint()] * (start > 0))
    tune_trainable.train_fn({"trial": TrialConfig().to_dict(), **config})
    return reports


def _expected(epochs: int, epoch_s: float, batch_s: float, frequency: int, start: int = 0):
    """The rule written out: a report once `batch_s` seconds passed since the last report (or
    since the trial started here), and with the last epoch; a checkpoint with a report that
    completes a `frequency`-th epoch not yet checkpointed, and with the last epoch."""
    reports, batch, since, checkpointed = [], [], 0.0, start // frequency
    for epoch in range(start, epochs):
        since += epoch_s
        batch.append(epoch)
        if since < batch_s and epoch < epochs - 1:
            continue
        due = (epoch + 1) // frequency
        ckpt = epoch if due > checkpointed or epoch == epochs - 1 else None
        checkpointed = max(checkpointed, due) if ckpt is not None else checkpointed
        reports.append((tuple(batch), ckpt))
        batch, since = [], 0.0
    return reports


EPOCHS = TrialConfig().train.epochs


@pytest.mark.parametrize(
    ("epoch_s", "batch_s", "frequency", "start"),
    [
        (0.25, 1.0, 3, 0),  # four epochs a report: the 3rd, 6th, ... epochs fall inside batches
        (0.25, 1.0, 1, 0),
        (0.25, 0.6, 5, 0),
        (0.25, 0.0, 3, 0),  # 0: a report per epoch, a checkpoint with every 3rd and the last
        (1.0, 0.5, 2, 0),  # epochs longer than the batch: a report per epoch
        (0.5, 1.0, 3, 6),  # restored after epoch 5: epochs 6, 7 complete no 3rd epoch anew
    ],
)
def test_reports_gather_epochs_and_carry_the_due_checkpoints(
    monkeypatch, epoch_s, batch_s, frequency, start
):
    config = {"checkpoint_frequency": frequency, "report_batch_s": batch_s}
    got = _reports(monkeypatch, config, epoch_s, start)
    assert got == _expected(EPOCHS, epoch_s, batch_s, frequency, start)
    assert [e for epochs, _ in got for e in epochs] == list(range(start, EPOCHS))
    assert got[-1][1] == EPOCHS - 1  # the last record always goes with a checkpoint


def test_a_batched_report_carries_a_checkpoint_due_inside_the_batch(monkeypatch):
    """Four 0.25 s epochs a report, a checkpoint every 3rd epoch: the report of epochs 4-7
    completes epoch 5 (the 6th), so the checkpoint of epoch 7 goes with it; a rule that looked at
    the newest epoch alone ((7 + 1) % 3 != 0) would leave the trial without it."""
    got = _reports(monkeypatch, {"checkpoint_frequency": 3, "report_batch_s": 1.0}, 0.25)
    assert got[:3] == [((0, 1, 2, 3), 3), ((4, 5, 6, 7), 7), ((8, 9, 10, 11), 11)]


def test_no_report_batch_s_is_a_report_per_epoch(monkeypatch):
    got = _reports(monkeypatch, {"checkpoint_frequency": 2}, 0.001)
    assert [epochs for epochs, _ in got] == [(e,) for e in range(EPOCHS)]
    assert [c for _, c in got] == [e if e % 2 or e == EPOCHS - 1 else None for e in range(EPOCHS)]
