"""Synthetic study inputs without Ray: the layer just below ``results.tables.snapshot``.

``TuneTrial`` objects as the reader returns them, and result.json bytes written the way Tune's
JSON logger writes them (one ``json.dump`` of the result, Tune's keys and the config included, per
line). Records come from :func:`tune_fixture.expected_record`, so the numbers are predictable.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
from tune_fixture import config, expected_record

from results.fits.bootstrap import BootstrapPlan
from results.tables.export import Tables, build_tables, fits_table
from results.tables.history import parse_histories
from results.tables.snapshot import TuneTrial
from trainables.config import (
    FlatnessConfig,
    ImpConfig,
    LayerSchedule,
    PerturbationConfig,
    PruningConfig,
    TrialConfig,
)
from trainables.records import empty_record, event_instability, layer_units

FAST_PLAN = BootstrapPlan(n_resamples=50, min_resamples=20, budget=200_000)


def tune_trial(
    cfg: TrialConfig,
    tid: str,
    status: str = "TERMINATED",
    experiment: str = "trials",
    error: str | None = None,
    **extra,
) -> TuneTrial:
    return TuneTrial(
        experiment=experiment,
        trial_id=tid,
        tune_status=status,
        config={"trial": cfg.to_dict(), "checkpoint_frequency": 1, **extra},
        logdir=tid,
        trial_dir=f"/nowhere/{tid}",
        last_result={},
        num_failures=1 if error else 0,
        error_file=f"/nowhere/{tid}/error.txt" if error else "",
        metadata="{}",
        error=error,
    )


def result_line(cfg: TrialConfig, tid: str, record: dict, iteration: int) -> bytes:
    """One line as Tune's JsonLoggerCallback writes it (``json.dump`` + newline)."""
    result = dict(record)
    result.update(
        timestamp=1795245872,
        checkpoint_dir_name=None,
        done=False,
        training_iteration=iteration,
        trial_id=tid,
        date="2026-11-21_07-24-32",
        time_this_iter_s=0.5,
        time_total_s=0.5 * iteration,
        pid=1234,
        hostname="node-a",
        node_ip="10.0.0.1",
        config={"trial": cfg.to_dict(), "checkpoint_frequency": 1},
        time_since_restore=0.5,
        iterations_since_restore=iteration,
    )
    return (json.dumps(result) + "\n").encode()


def history(
    cfg: TrialConfig, tid: str, epochs: list[int] | None = None, last: dict | None = None
) -> bytes:
    """Result lines for `epochs` (default: all) of the fake trainable; `last` patches the final one."""
    epochs = list(range(cfg.train.epochs)) if epochs is None else epochs
    lines = []
    for i, epoch in enumerate(epochs):
        rec = expected_record(cfg, epoch)
        if last and i == len(epochs) - 1:
            rec.update(last)
        lines.append(result_line(cfg, tid, rec, epoch + 1))
    return b"".join(lines)


def study_inputs(
    n_per_target: int, seeds: int = 1, epochs: int = 6
) -> tuple[list[TuneTrial], list[bytes]]:
    """Baselines (one per seed) + `n_per_target` pruned configs per target x `seeds` seeds, all ok.

    Pruned configs differ in pruning fields only (period, score, ``imp.rewind_epoch``), so they
    all share the baselines.
    """
    trials, blobs = [], []
    for seed in range(seeds):
        cfg = _epochs(config(None, seed), epochs)
        trials.append(tune_trial(cfg, f"t{len(trials):06d}"))
        blobs.append(history(cfg, trials[-1].trial_id))
    for target in ("smallest", "random", "largest"):
        for k in range(n_per_target):
            for seed in range(seeds):
                cfg = _epochs(config(target, seed), epochs)
                imp = dataclasses.replace(cfg.pruning.imp, rewind_epoch=k)  # unused by schedules
                pruning = dataclasses.replace(
                    cfg.pruning, period=1 + k % 2, score=("l1", "l2")[k // 2 % 2], imp=imp
                )
                cfg = dataclasses.replace(cfg, pruning=pruning)
                trials.append(tune_trial(cfg, f"t{len(trials):06d}"))
                blobs.append(history(cfg, trials[-1].trial_id))
    return trials, blobs


def _epochs(cfg: TrialConfig, epochs: int) -> TrialConfig:
    flat = dataclasses.replace(cfg.flatness, epochs=(epochs - 1,))
    return dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=epochs), flatness=flat
    )


def tables(trials: list[TuneTrial], blobs: list[bytes]) -> Tables:
    return build_tables(trials, parse_histories(blobs), "feedface")


def fits(tables: Tables, plan: BootstrapPlan = FAST_PLAN) -> pa.Table:
    return fits_table(tables.trials, "feedface", plan)


def empty_history() -> pa.Table:
    return parse_histories([])


# --- studies with the dimensions of the papers' figures ---------------------------------------

TARGETS = ("smallest", "random", "largest")
PERIODS = (1, 2, 3)  # with tune_fixture.LAYERS (epochs 1-3): events [1, 2, 3], [1, 3], [1]
SCRATCH_LAYERS = (LayerSchedule("conv1", 0.5, 0, 0), LayerSchedule("conv2", 0.25, 0, 0))


def _pruning(cfg: TrialConfig, **changes) -> TrialConfig:
    return dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, **changes))


def with_scratch(tables: Tables, scratch_ids: set[str]) -> Tables:
    """`tables` whose trials table has the config column ``pruning_scratch`` (True for the trials
    in `scratch_ids`), as a prunetune with a scratch-pruning config field writes it."""
    trials = tables.trials
    ids = trials.column("trial_id").to_pylist()
    column = pa.array([t in scratch_ids for t in ids], type=pa.bool_())
    names = trials.column_names
    if "pruning_scratch" in names:
        trials = trials.set_column(names.index("pruning_scratch"), "pruning_scratch", column)
    else:
        trials = trials.append_column("pruning_scratch", column)
    return dataclasses.replace(tables, trials=trials)


def figure_study(seeds: int = 5, models: tuple[str, ...] = ("cnn1d",)) -> Tables:
    """Bartoldson et al.'s Figs. 2, 3 and 6 at toy scale, per model: unpruned baselines, every
    target x period of :data:`PERIODS`, and scratch trials (pruned once, at epoch 0, before any
    training that counts; ``pruning_scratch`` true), `seeds` replicates each, all ok.

    A pruned trial's instability is its seed's drop (``tune_fixture.DROP``), so each (target,
    period) cell gets seeds of its own, and Prune_L seeds from 4 * `seeds` on: with `seeds` <= 5
    no two pruned trials share a stability (ties would turn on float rounding).
    """
    assert seeds <= 5
    trials, blobs, scratch = [], [], set()

    def add(cfg: TrialConfig) -> str:
        trials.append(tune_trial(cfg, f"t{len(trials):06d}"))
        blobs.append(history(cfg, trials[-1].trial_id))
        return trials[-1].trial_id

    for model in models:
        for i in range(seeds):
            base = config(None, i)
            base = dataclasses.replace(base, model=dataclasses.replace(base.model, name=model))
            add(base)
            for target in TARGETS:
                for p, period in enumerate(PERIODS):
                    seed = i + seeds * p + (4 * seeds if target == "largest" else 0)
                    cfg = dataclasses.replace(base, seed=seed, pruning=config(target, 0).pruning)
                    add(_pruning(cfg, period=period))
            cfg = dataclasses.replace(base, pruning=config("smallest", 0).pruning)
            scratch.add(add(_pruning(cfg, layers=SCRATCH_LAYERS)))
    return with_scratch(tables(trials, blobs), scratch)


NOISE_ARMS = (
    PerturbationConfig(),  # the pruning reference
    *(
        PerturbationConfig(mode, "iter", steps)
        for mode in ("zeroing", "gaussian")
        for steps in (0, 50)
    ),
    PerturbationConfig("zeroing", "cumulative", 89, restore=True),
)


def noise_study(seeds: int = 3) -> Tables:
    """Figs. 5 / D2 at toy scale: baselines, Prune_L without perturbation (the reference) and
    zeroing / gaussian arms, `seeds` seeds each. Every arm is a seed's own accuracy curve shifted
    by 0.01 per arm, so the means differ."""
    trials, blobs = [], []
    for seed in range(seeds):
        base = config(None, seed)
        trials.append(tune_trial(base, f"b{seed}"))
        blobs.append(history(base, f"b{seed}"))
        for k, arm in enumerate(NOISE_ARMS):
            cfg = _pruning(config("largest", seed), perturbation=arm)
            tid = f"n{k}s{seed}"
            trials.append(tune_trial(cfg, tid))
            lines = []
            for epoch in range(cfg.train.epochs):
                rec = expected_record(cfg, epoch)
                rec["test_acc"] += 0.01 * k
                lines.append(result_line(cfg, tid, rec, epoch + 1))
            blobs.append(b"".join(lines))
    return tables(trials, blobs)


IMP_ROUNDS, IMP_T = 2, 3  # rounds after the dense one; epochs per round
IMP_WEIGHTS = 1000  # prunable weights (n_prunable)


def imp_config(control: str, seed: int, noise: float = 0.0) -> TrialConfig:
    base = config(None, seed, noise=noise)
    imp = ImpConfig(rounds=IMP_ROUNDS, fraction=0.2, control=control)
    pruning = PruningConfig(
        method="imp", granularity="weight", score="magnitude", scope="global", imp=imp
    )
    train = dataclasses.replace(base.train, epochs=IMP_T)
    return dataclasses.replace(base, pruning=pruning, train=train, flatness=FlatnessConfig())


def imp_record(cfg: TrialConfig, epoch: int) -> dict:
    """A closed-form IMP record: round r = epoch // T; after the last epoch of round r < R an event
    prunes to density 0.8^(r+1) (nothing for extended_dense); sparse_from_start's transition after
    round R keeps the final mask. Test accuracy 0.6 + 0.05 r + 0.01 (epoch mod T) + 0.001 seed,
    dropping by 0.1 at an event; training loss 0.5 - 0.01 r. As the loop records IMP, an event
    epoch's row is the level's trained model (test_acc = acc_before, the sparsity it trained at);
    the pruned model is acc_after / sparsity_after."""
    control = cfg.pruning.imp.control
    r, within = divmod(epoch, IMP_T)
    density = 0.8 ** min(r, IMP_ROUNDS)
    acc = 0.6 + 0.05 * r + 0.01 * within + 0.001 * cfg.seed
    rec = empty_record(epoch)
    last_epoch = IMP_T * (IMP_ROUNDS + 1 + (control == "sparse_from_start")) - 1
    rec.update(
        train_loss=0.5 - 0.01 * r,
        train_acc=0.9,
        test_loss=1.0,
        test_acc=acc,
        lr=0.1,
        epoch_time_s=0.01,
        imp_round=r,
        pruning_rate=20.0,
        status="done" if epoch == last_epoch else "running",
        sparsity=0.0 if control == "extended_dense" else 1 - density,
    )
    if cfg.dataset.label_noise_fraction > 0:
        rec.update(train_acc_noisy=0.2 + 0.1 * r, train_acc_clean=0.8 + 0.01 * r)
    rec["n_prunable"] = IMP_WEIGHTS
    event = within == IMP_T - 1 and (
        r < IMP_ROUNDS or (r == IMP_ROUNDS and control == "sparse_from_start")
    )
    if event and control != "extended_dense":  # fraction 0 removes nothing: no event
        after = acc - 0.1
        pruned = r < IMP_ROUNDS
        sparsity_after = 1 - 0.8 ** (r + 1) if pruned else rec["sparsity"]
        # the weights the prune removes (the reinit event: every zero of the final mask)
        units = round(IMP_WEIGHTS * (sparsity_after - (rec["sparsity"] if pruned else 0.0)))
        rec.update(
            is_event=True,
            acc_before=acc,
            acc_after=after,
            test_loss_after=1.5,
            instability=event_instability(acc, after),
            sparsity_after=sparsity_after,
            units_removed=layer_units({"conv1": units // 2, "conv2": units - units // 2}),
            units_removed_total=units,
        )
    return rec


def imp_study(seeds: int = 2, noise: float | tuple[float, ...] = 0.2) -> Tables:
    """Jin et al.'s controls at toy scale: IMP, extended dense and sparse-from-start trials at each
    label-noise level `noise`, `seeds` seeds each, plus a baseline per seed and noise level."""
    trials, blobs = [], []
    for level in noise if isinstance(noise, tuple) else (noise,):
        tag = "" if level == 0.2 else f"n{level:g}_"
        for seed in range(seeds):
            base = dataclasses.replace(imp_config("none", seed, level), pruning=PruningConfig())
            trials.append(tune_trial(base, f"{tag}b{seed}"))
            blobs.append(history(base, f"{tag}b{seed}"))
            for control in ("none", "extended_dense", "sparse_from_start"):
                cfg = imp_config(control, seed, level)
                tid = f"{tag}{control}{seed}"
                trials.append(tune_trial(cfg, tid))
                n = IMP_T * (IMP_ROUNDS + 1 + (control == "sparse_from_start"))
                blobs.append(
                    b"".join(result_line(cfg, tid, imp_record(cfg, e), e + 1) for e in range(n))
                )
    return tables(trials, blobs)
