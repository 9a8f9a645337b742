"""The training loop (no Ray): one :class:`TrialRunner` runs one trial and yields a record per epoch.

Per epoch, in the order of Bartoldson et al.'s official code (bbartoldson/
GeneralizationStabilityTradeoff, ``experiments.py::main``), with the LR step moved after the
second evaluation (the official steps it between the event and that evaluation; it affects
neither):

    train one epoch -> model.eval() -> acc_before on the test set -> prune (if an event is due)
    -> acc_after on the same set -> (validation / noisy-label accuracies) -> LR step

with no training and no BN recalibration between the two evaluations. The epoch's record
describes the model after the event (``test_acc`` = ``acc_after``). IMP
(:func:`trainables.records.measured_before_event`) measures the model before it instead, as
OpenLTH evaluates each level's trained model and then prunes (``lottery/runner.py``): its
validation and noisy-label accuracies run right after ``acc_before`` and ``test_acc`` =
``acc_before``; every event keeps its post-event numbers as ``acc_after``, ``test_loss_after``
and ``sparsity_after``. Accuracies are fractions in
[0, 1], losses mean cross-entropy in nats. An epoch the method does not train
(``PruningMethod.trains``: scratch pruning's epoch 0) skips the training and the LR step, as the
official code does; its ``train_loss`` / ``train_acc`` stay null.

Seams for features added later, so the epoch itself never changes:

- a **pruning method** (:func:`trainables.methods.method_class`) decides the epoch count and
  performs the event;
- **extensions** (:data:`trainables.extensions.EXTENSIONS`) add features.

Both are :class:`trainables.hooks.Hooks`: ``begin_epoch`` before training, ``before_step`` /
``after_step`` around every optimizer step, ``before_eval_batch`` before every batch of the two
test-set evaluations (``acc_before``, ``acc_after``; no other evaluation), ``before_event`` in eval
mode right after ``acc_before`` (where the official code measures flatness), ``end_epoch`` after
the LR step; all default to no-ops. The method's ``event`` returns None (no second evaluation), an
empty dict (a second test evaluation without an event: the epoch's ``test_acc`` is its accuracy),
or the units per layer of an event.

All mutable loop state is in ``runner.loop`` (:class:`trainables.state.LoopState`); together with
the modules' and the method's / extensions' ``state_dict()`` it is the checkpoint
(:mod:`trainables.state`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from trainables.augment import augment_batch, derived_generator
from trainables.config import TrialConfig
from trainables.cross_rules import validate
from trainables.data import load_data
from trainables.extensions import EXTENSIONS
from trainables.hooks import Extension, Hooks, overrides
from trainables.methods import method_class
from trainables.models import build_model
from trainables.provenance import run_facts
from trainables.pruning.masks import MaskSet
from trainables.records import empty_record, event_instability, layer_units, measured_before_event
from trainables.state import GENERATORS, LoopState, load_state, restore_state


class TrialRunner:
    """Builds a trial from its config and runs it epoch by epoch.

    Args:
        cfg: the resolved trial.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or None = CUDA when available.
        num_threads: torch intra-op threads (the CPUs the trial was given); None leaves it.

    Attributes: ``cfg``, ``device``, ``data`` (``trainables.data.DataBundle``), ``model``,
    ``optimizer``, ``scheduler`` (MultiStepLR, stepped once per epoch), ``masks`` (MaskSet),
    ``method`` (PruningMethod), ``extensions`` ({name: Extension}), ``loop`` (LoopState),
    ``facts`` (where the trial runs: :func:`trainables.provenance.run_facts`, on every record).
    """

    def __init__(
        self,
        cfg: TrialConfig,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
    ):
        validate(cfg)
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg = cfg
        self.device = torch.device(device)
        self.data = load_data(cfg.dataset, cfg.seed, self.device)
        torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
        m = cfg.model
        self.model = build_model(m.name, m.width, self.data.input_shape, self.data.num_classes)
        self._channels_last = cfg.train.channels_last and len(self.data.input_shape) == 3
        memory_format = torch.channels_last if self._channels_last else torch.preserve_format
        self.model.to(device=self.device, memory_format=memory_format)
        self.optimizer = _make_optimizer(cfg, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.train.milestones), gamma=cfg.train.gamma
        )
        self.loop = LoopState({p: derived_generator(cfg.seed, p) for p in GENERATORS})
        method = method_class(cfg)
        self.masks = MaskSet(
            self.model, method.mask_granularity(cfg), weights_only=method.mask_weights_only(cfg)
        )
        self.facts = run_facts(self.model, self.masks, self.device)
        self.method = method(self)
        built = {name: make(self) for name, make in EXTENSIONS.items()}
        self.extensions: dict[str, Extension] = {n: e for n, e in built.items() if e is not None}
        self._hooks: list[Hooks] = [self.method, *self.extensions.values()]
        self._eval_hooks = [h for h in self._hooks if overrides(h, "before_eval_batch")]
        self._bf16 = cfg.train.bf16
        self._measured_before = measured_before_event(cfg.pruning.method)

    @classmethod
    def from_checkpoint(
        cls,
        directory: str,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
    ) -> TrialRunner:
        """Rebuild the runner saved by ``trainables.state.save_state`` in `directory`."""
        payload = load_state(directory)
        runner = cls(TrialConfig.from_dict(payload["trial"]), device, num_threads)
        restore_state(runner, payload)
        return runner

    @property
    def finished(self) -> bool:
        """True once the last record (status ``done`` or ``diverged``) has been produced."""
        return self.loop.finished

    @property
    def num_epochs(self) -> int:
        return self.method.num_epochs()

    def run(self) -> Iterator[dict[str, Any]]:
        """Yield the remaining epochs' records; the last has status ``done`` or ``diverged``."""
        while not self.finished:
            yield self.run_epoch()

    def run_epoch(self) -> dict[str, Any]:
        """Run the next epoch (see module docstring) and return its record."""
        start = time.perf_counter()
        epoch = self.loop.epoch
        record = empty_record(epoch)
        record.update(self.facts)
        for hooks in self._hooks:
            hooks.begin_epoch(self, epoch)
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        trains = self.method.trains(epoch)
        if trains:
            record["train_loss"], record["train_acc"] = self._train_epoch()
        self.model.eval()
        test_loss, acc_before = self._evaluate(self.data.x_test, self.data.y_test, test=True)
        if trains and not math.isfinite(record["train_loss"]):
            record["test_loss"], record["test_acc"] = test_loss, acc_before
            record["sparsity"] = self.masks.sparsity
            return self._finish(record, start, "diverged")
        for hooks in self._hooks:
            hooks.before_event(self, record)
        if self._measured_before:  # the level's trained model (IMP), whatever the event does
            record["test_loss"], record["test_acc"] = test_loss, acc_before
            record["sparsity"] = self.masks.sparsity
            self._extra_evaluations(record)
        changed = self.method.event(self, epoch)
        acc_after = acc_before
        if changed is not None:
            test_loss, acc_after = self._evaluate(self.data.x_test, self.data.y_test, test=True)
            removed = {layer: n for layer, n in changed.items() if n > 0}
            if removed:
                self._record_event(record, acc_before, acc_after, removed)
                record.update(test_loss_after=test_loss, sparsity_after=self.masks.sparsity)
        if not self._measured_before:  # the model after the event (schedule pruning)
            record["test_loss"], record["test_acc"] = test_loss, acc_after
            record["sparsity"] = self.masks.sparsity
            self._extra_evaluations(record)
        if trains:  # an untrained epoch takes no LR step: later milestones come one epoch late
            self.scheduler.step()
        for hooks in self._hooks:
            hooks.end_epoch(self, record)
        done = epoch + 1 >= self.num_epochs
        return self._finish(record, start, "done" if done else "running")

    # --- pieces of the epoch -------------------------------------------------------------------

    def _train_epoch(self) -> tuple[float, float]:
        """One pass over the training set in a seeded order; (mean loss, running accuracy).

        Loss and correct counts accumulate on the device: one host sync per epoch.
        """
        model, optimizer, masks, data = self.model, self.optimizer, self.masks, self.data
        model.train()
        n = data.y_train.shape[0]
        order = torch.randperm(n, generator=self.loop.generators["data_order"]).to(self.device)
        augment = self.cfg.dataset.augment
        before = [h for h in self._hooks if overrides(h, "before_step")]
        after = [h for h in self._hooks if overrides(h, "after_step")]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        autocast = self._autocast()
        for idx in order.split(self.cfg.train.batch_size):
            x, y = data.x_train[idx], data.y_train[idx]
            if augment:
                x = augment_batch(x, self.loop.generators["augment"], data.pixel_zero)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for hooks in before:
                hooks.before_step(self)
            with autocast:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            masks.mask_grads_()
            optimizer.step()
            masks.apply_()
            for hooks in after:
                hooks.after_step(self)
            loss_sum.add_(loss.detach(), alpha=idx.numel())
            correct.add_((logits.argmax(1) == y).sum())
        return loss_sum.item() / n, correct.item() / n

    @torch.no_grad()
    def _evaluate(
        self, x: torch.Tensor, y: torch.Tensor, test: bool = False
    ) -> tuple[float, float]:
        """Eval-mode (mean loss, accuracy) of `x` [N, ...] against `y` [N], in batches of
        ``train.eval_batch_size``. ``test``: one of the two test-set evaluations around the
        event, whose every batch is preceded by the hooks' ``before_eval_batch``."""
        hits, loss = self._predict(x, y, self._eval_hooks if test else ())
        loss_sum, n_correct = torch.stack([loss.double(), hits.sum().double()]).tolist()
        return loss_sum / y.numel(), int(n_correct) / y.numel()

    @torch.no_grad()
    def _predict(
        self, x: torch.Tensor, y: torch.Tensor, before_batch: Sequence[Hooks] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-example correctness bool [N], summed loss scalar) on the device; no host sync.

        `before_batch`: hooks whose ``before_eval_batch`` runs before each batch's forward."""
        hits, loss = [], torch.zeros((), device=self.device)
        bs = self.cfg.train.eval_batch_size
        with self._autocast():
            for xb, yb in zip(x.split(bs), y.split(bs), strict=True):
                for hooks in before_batch:
                    hooks.before_eval_batch(self)
                if self._channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                logits = self.model(xb).float()
                loss += F.cross_entropy(logits, yb, reduction="sum")
                hits.append(logits.argmax(1) == yb)
        return torch.cat(hits), loss

    def _record_event(self, record: dict, before: float, after: float, removed: dict) -> None:
        event = {
            "epoch": record["epoch"],
            "acc_before": before,
            "acc_after": after,
            "instability": event_instability(before, after),
            "units_removed": dict(removed),
        }
        self.loop.events.append(event)
        record.update(event, is_event=True, units_removed_total=sum(removed.values()))
        record["units_removed"] = layer_units(removed)

    def _extra_evaluations(self, record: dict[str, Any]) -> None:
        """Validation split and noisy/clean training accuracies of the measured model (eval
        mode; ``trainables.records``: after the event, or before it for IMP)."""
        data = self.data
        if data.x_val is not None:
            record["val_loss"], record["val_acc"] = self._evaluate(data.x_val, data.y_val)
        if self.cfg.dataset.label_noise_fraction > 0:
            hits, _ = self._predict(data.x_train, data.y_train)
            noisy = data.noisy_mask
            counts = torch.stack([hits[noisy].sum(), hits[~noisy].sum()]).tolist()
            n_noisy = int(noisy.sum())
            n_clean = noisy.numel() - n_noisy
            record["train_acc_noisy"] = counts[0] / n_noisy if n_noisy else None
            record["train_acc_clean"] = counts[1] / n_clean if n_clean else None

    def _finish(self, record: dict[str, Any], start: float, status: str) -> dict[str, Any]:
        record["status"] = status
        record["epoch_time_s"] = time.perf_counter() - start
        self.loop.records.append(record)
        self.loop.epoch += 1
        self.loop.status = status
        return record

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the trial's device (CUDA or CPU alike), else no autocast."""
        if self._bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _make_optimizer(cfg: TrialConfig, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
        )
    raise AssertionError(f"train.optimizer {t.optimizer!r} passed validation")
