"""A real Ray Tune study for the results tests, made by a tiny fake function trainable.

The trainable follows the contract of ``trainables.tune_trainable.train_fn``: its Tune config is
``{"trial": TrialConfig.to_dict(), "checkpoint_frequency": 1}`` (plus a test-only ``behaviour``),
and each epoch it reports a full ``trainables.records`` record, nothing else. Numbers are
simple closed forms of the config, so tests can predict them exactly (:func:`expected_record`).

Behaviours: ``ok``; ``diverge`` (NaN loss at epoch 2, last status "diverged"); ``error`` (raises
at epoch 1); ``flaky`` (raises once at epoch 3, Tune restores the epoch-1 checkpoint and the trial
re-reports epochs 2-3); ``stop`` (a stop criterion ends it after epoch 1); ``hang`` (after epoch 1
the driver is interrupted by SIGINT, as a Ctrl-C would: the snapshot keeps it unfinished); trials
after ``hang`` never start (each trial takes both CPUs, so they run one at a time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time

from trainables.config import LayerSchedule, PruningConfig, TrialConfig
from trainables.pruning.schedule import schedule_summary, units_per_event
from trainables.records import empty_record, event_instability, layer_units

EPOCHS = 6
LAYERS = (LayerSchedule("conv1", 0.5, 1, 3), LayerSchedule("conv2", 0.25, 1, 3))
N_UNITS = 16
DROP = {"smallest": 0.02, "random": 0.05, "largest": 0.1}
# Where the fake trainable says it ran (trainables.provenance.run_facts), on every record.
FACTS = {
    "device": "cpu",
    "torch_version": "0.0.0+fixture",
    "threads": 1,
    "n_params": 1234,
    "n_prunable": 2 * N_UNITS,
}


def config(target: str | None, seed: int, lr: float = 1e-3, noise: float = 0.0) -> TrialConfig:
    base = TrialConfig(seed=seed)
    base = dataclasses.replace(
        base,
        train=dataclasses.replace(base.train, epochs=EPOCHS, lr=lr),
        dataset=dataclasses.replace(base.dataset, label_noise_fraction=noise),
        flatness=dataclasses.replace(base.flatness, epochs=(EPOCHS - 1,)),
    )
    if target is None:
        return base
    pruning = PruningConfig(method="schedule", target=target, period=2, layers=LAYERS)
    return dataclasses.replace(base, pruning=pruning)


def base_acc(epoch: int, seed: int) -> float:
    return 0.5 + 0.05 * epoch + 0.001 * seed


def expected_record(cfg: TrialConfig, epoch: int) -> dict:
    """The record the fake trainable reports for `cfg` at `epoch`."""
    rec = empty_record(epoch)
    rec.update(FACTS)
    events = (
        ()
        if cfg.is_baseline
        else schedule_summary(cfg.pruning.layers, cfg.pruning.period)["event_epochs"]
    )
    drop = 0.0 if cfg.is_baseline else DROP[cfg.pruning.target] * (1 + 0.1 * cfg.seed)
    n_before = sum(1 for e in events if e < epoch)
    # each earlier event adds a lasting benefit proportional to its instability
    acc = base_acc(epoch, cfg.seed) + 0.5 * drop * n_before
    rec.update(
        train_loss=1.0 / (epoch + 1),
        train_acc=min(1.0, acc + 0.1 - drop),
        test_loss=1.2 / (epoch + 1),
        test_acc=acc,
        lr=cfg.train.lr,
        epoch_time_s=0.01,
        sparsity=0.0,
        status="done" if epoch == cfg.train.epochs - 1 else "running",
    )
    if cfg.dataset.label_noise_fraction > 0:
        rec.update(train_acc_noisy=0.2 + 0.05 * epoch, train_acc_clean=acc + 0.1)
    if epoch in events:
        after = acc * (1 - drop)
        units = {ls.name: _removed(ls, events)[events.index(epoch)] for ls in cfg.pruning.layers}
        rec.update(
            is_event=True,
            acc_before=acc,
            acc_after=after,
            test_acc=after,
            instability=event_instability(acc, after),
            units_removed=layer_units(units),
            units_removed_total=sum(units.values()),
        )
    done_units = sum(
        _removed(ls, events)[i]
        for ls in cfg.pruning.layers
        for i, e in enumerate(events)
        if e <= epoch
    )
    rec["sparsity"] = done_units / (2 * N_UNITS)
    if cfg.is_baseline:  # as trainables.methods records them
        rec.update(pruning_rate=0.0, num_events=0)
    else:
        summary = schedule_summary(cfg.pruning.layers, cfg.pruning.period)
        rec.update(pruning_rate=summary["pruning_rate"], num_events=summary["num_events"])
    if epoch in cfg.flatness.epochs:
        rec.update(
            hessian_topk_sum=100.0 - 200 * drop, grad_noise_trace=10.0 + drop, flatness_time_s=0.1
        )
    return rec


def _removed(layer: LayerSchedule, events: tuple[int, ...]) -> tuple[int, ...]:
    return units_per_event(N_UNITS, layer.final_fraction, len(events))


def train_fn(tune_config: dict) -> None:
    from ray import tune

    cfg = TrialConfig.from_dict(tune_config["trial"])
    behaviour = tune_config.get("behaviour", "ok")
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["epoch"] + 1
    for epoch in range(start, cfg.train.epochs):
        if behaviour == "error" and epoch == 1:
            raise RuntimeError("fake trainable failure")
        marker = tune_config.get("marker", "")
        if behaviour == "flaky" and epoch == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("flaky once")
        if behaviour == "hang" and epoch == 2:
            time.sleep(120)
        rec = expected_record(cfg, epoch)
        if behaviour == "diverge" and epoch == 2:
            rec.update(train_loss=float("nan"), test_acc=0.1, status="diverged")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"epoch": epoch}, f)
            ckpt = tune.Checkpoint.from_directory(d) if epoch == 1 else None
            tune.report(rec, checkpoint=ckpt)
        if rec["status"] == "diverged":
            return


def stop_fn(trial_id_: str, result: dict) -> bool:
    """Stop criterion: ends ``stop`` trials after epoch 1; a ``hang`` trial's epoch 1 interrupts
    the whole run with SIGINT, as a user's Ctrl-C would (Tune saves the state, then exits)."""
    behaviour = result["config"].get("behaviour")
    if behaviour == "hang" and result["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGINT)
    return behaviour == "stop" and result["epoch"] >= 1


TRIALS = (  # (target, seed, behaviour, lr, noise); None = unpruned baseline
    (None, 0, "ok", 1e-3, 0.0),
    (None, 1, "ok", 1e-3, 0.0),
    ("smallest", 0, "ok", 1e-3, 0.0),
    ("smallest", 1, "ok", 1e-3, 0.0),
    ("largest", 0, "ok", 1e-3, 0.0),
    ("largest", 1, "flaky", 1e-3, 0.0),
    ("random", 0, "ok", 1e-3, 0.0),
    ("random", 0, "error", 1e-3, 0.0),  # an orphan: same config as the ok trial above
    ("random", 1, "diverge", 1e-3, 0.0),
    ("largest", 2, "error", 1e-3, 0.0),
    ("smallest", 0, "ok", 5e-3, 0.0),  # no matched baseline (lr differs)
    (None, 0, "ok", 1e-3, 0.2),  # label noise: baseline ...
    ("largest", 0, "ok", 1e-3, 0.2),  # ... and a pruned trial
    ("smallest", 3, "stop", 1e-3, 0.0),
)
INTERRUPTED = (  # a second experiment of the same study, interrupted by Ctrl-C
    ("largest", 3, "hang", 1e-3, 0.0),
    ("random", 3, "ok", 1e-3, 0.0),  # never starts
)


def make_study(root: str, name: str = "fake-study") -> str:
    """Run the fake study under ``root/name`` (Ray must be initialised); returns the study dir.

    Experiment ``trials`` runs :data:`TRIALS` to the end; experiment ``interrupted`` runs
    :data:`INTERRUPTED` one trial at a time (each takes both CPUs) and is interrupted.
    """
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    study = os.path.join(root, name)
    os.makedirs(os.path.join(study, "tune"), exist_ok=True)
    with open(os.path.join(study, "spec.yaml"), "w") as f:
        f.write(f"# spec-hash: abc123\nname: {name}\n")
    with open(os.path.join(study, "study.json"), "w") as f:
        json.dump({"name": name, "spec_hash": "abc123", "prunetune_version": "0.1.0"}, f)
    _run(study, "trials", TRIALS, cpus=1, marker=os.path.join(root, "flaky-marker"))
    _run(study, "interrupted", INTERRUPTED, cpus=2, marker="")
    return study


def _run(study: str, experiment: str, cases: tuple, cpus: int, marker: str) -> None:
    from ray import tune

    trials = [config(t, s, lr, noise).to_dict() for t, s, _, lr, noise in cases]
    behaviours = [b for _, _, b, _, _ in cases]
    space = {
        "case": tune.grid_search(list(range(len(cases)))),
        "trial": tune.sample_from(lambda c: trials[c["case"]]),
        "behaviour": tune.sample_from(lambda c: behaviours[c["case"]]),
        "checkpoint_frequency": 1,
        "marker": marker,
    }
    tuner = tune.Tuner(
        tune.with_resources(train_fn, {"cpu": cpus}),
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=os.path.join(study, "tune"),
            stop=stop_fn,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    tuner.fit()
