"""``eval_passes: official`` against the oracle of the official pass sequence (official_noise.py).

(a) real MNIST-1D trials, three layers whose windows overlap and are cut by their own events,
every mode / variant / restore, with a validation split and label noise whose evaluations must
not count; compared through the layer_events table (records -> JSON -> Arrow, as exported);
(b) the preset's VGG11 schedule: the oracle's numbers alone, the pass budget prunetune derives,
and prunetune's window bookkeeping driven through the same epochs; (c) the noise values on
evaluation batches.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import official_noise as official
import pyarrow as pa
import pytest
import torch

from results.tables.export import layer_events_table
from results.tables.history import parse_histories
from trainables.config import TrialConfig
from trainables.loop import TrialRunner
from trainables.methods import PerturbationPruning
from trainables.pruning.masks import MaskSet
from trainables.pruning.perturbation import first_alive_std
from trainables.pruning.windows import (
    official_passes_for_steps,
    official_passes_to_training_steps,
)

torch.set_num_threads(1)

# MNIST-1D, 1000 samples: 800 training (720 after a 10% validation split), 200 test. At batch 64
# and eval batch 64: B = 12, E = 4. conv1 has events at 0, 1, 2 (each cuts the previous window),
# conv2 at 1, conv3 at 1, 2, 3: windows of different layers overlap.
LAYERS = [
    {"name": "conv1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2},
    {"name": "conv2", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 1},
    {"name": "conv3", "final_fraction": 0.75, "start_epoch": 1, "end_epoch": 3},
]
EPOCHS, B, E, STEPS = 5, 12, 4, 20


def _cfg(data_dir: str, layers: list[dict] = LAYERS, **perturbation) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {
                "data_dir": data_dir,
                "num_samples": 1000,
                "validation_fraction": 0.1,
                "label_noise_fraction": 0.1,
            },
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": EPOCHS, "batch_size": 64, "eval_batch_size": 64, "lr": 3e-3},
            "pruning": {
                "method": "schedule",
                "target": "largest",
                "layers": layers,
                "perturbation": {"steps": STEPS, "eval_passes": "official", **perturbation},
            },
            "seed": 3,
        }
    )


def _layer_event_rows(records: list[dict]) -> list[dict]:
    """prunetune's layer_events rows of one trial, through the JSON reader as exported."""
    blob = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    history = parse_histories([blob], strict=True)
    ids = pa.array(["t0"] * history.num_rows)
    epochs = history.append_column("trial_id", ids).append_column("trial_key", ids)
    rows = layer_events_table(epochs, "h").to_pylist()
    for row in rows:
        del row["trial_id"], row["trial_key"]
    return sorted(rows, key=lambda r: (r["epoch"], r["layer"]))


def _oracle_rows(n_passes: int, n_units: int = 8) -> list[dict]:
    layers = [
        official.Layer(x["name"], n_units, x["final_fraction"], x["start_epoch"], x["end_epoch"])
        for x in LAYERS
    ]
    return official.rows(official.simulate(layers, 1, EPOCHS, n_passes, E, B))


MODES = [
    {"mode": mode, "variant": variant, "restore": restore}
    for mode in ("zeroing", "gaussian")
    for variant in ("iter", "cumulative")
    for restore in (False, True)
]


@pytest.mark.parametrize("perturbation", MODES, ids=lambda p: "-".join(map(str, p.values())))
def test_real_trial_windows_match_the_official_sequence(data_dir, perturbation):
    runner = TrialRunner(_cfg(data_dir, **perturbation), device="cpu", num_threads=1)
    assert (runner.data.y_train.numel(), runner.data.y_test.numel()) == (720, 200)
    n_passes = official_passes_for_steps(STEPS, E, B)
    assert runner.method.perturbation.passes == n_passes == 32
    records = list(runner.run())
    expected = _oracle_rows(n_passes)
    assert _layer_event_rows(records) == expected
    # every kind of close happens, and windows of different layers overlap
    assert {r["closed_by"] for r in expected} == {"duration", "own_event", "trial_end"}
    conv2 = next(r for r in expected if r["layer"] == "conv2")
    assert conv2["closed_by"] == "duration" and conv2["closed_epoch"] == 3
    # the second test evaluation ran exactly on the epochs with an open window or an event
    assert [r["is_event"] for r in records] == [True, True, True, True, False]
    assert records[-1]["test_acc"] is not None


def test_only_the_two_test_evaluations_are_passes(data_dir):
    # validation split and noisy-label accuracies run after the post-event evaluation on every
    # epoch; a draw there would break the equality below
    runner = TrialRunner(_cfg(data_dir, mode="gaussian"), device="cpu", num_threads=1)
    pert = runner.method.perturbation
    seen = {}
    event = runner.method.event

    def spy(r, epoch):
        changed = event(r, epoch)
        seen["weights"] = {n: m.weight.detach().clone() for n, m in pert.layers.items()}
        seen["generator"] = pert.generator.get_state()
        seen["units"] = {n: u.clone() for n, u in pert.units.items()}
        return changed

    runner.method.event = spy
    runner.run_epoch()  # epoch 0: conv1's event, then the post-event evaluation's E passes
    gen = torch.Generator()
    gen.set_state(seen["generator"])
    expected = seen["weights"]["conv1"].clone()
    rows = seen["units"]["conv1"]
    for _ in range(E):  # the official rule, pass by pass: sigma from the first untargeted unit
        sigma = first_alive_std(expected, ~pert.targeted["conv1"])
        expected[rows] += torch.randn((int(rows.sum()), *expected.shape[1:]), generator=gen) * sigma
    assert torch.equal(pert.layers["conv1"].weight.detach(), expected)
    assert torch.equal(pert.generator.get_state(), gen.get_state())
    assert pert.windows.open["conv1"].eval == E and pert.windows.open["conv1"].train == 0


@pytest.mark.parametrize("restore", [False, True])
def test_a_window_closing_inside_the_pre_event_evaluation_logs_the_second_one(data_dir, restore):
    """A budget derived from ``steps`` ends right after a training batch, so no preset reaches
    this: a budget that ends on the second batch of an epoch's pre-event evaluation leaves that
    evaluation partly perturbed. The official code evaluated twice every epoch and logged the
    second (post-event) evaluation, which no window perturbs any more: the model as the window
    left it, evaluated without perturbation."""
    once = [{"name": "conv1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}]
    cfg = _cfg(data_dir, once, mode="gaussian", restore=restore)
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    # N + 1 = E + B + 2 passes: epoch 0's post-event evaluation, epoch 1's B training batches and
    # the first two batches of its pre-event evaluation
    runner.method.perturbation.passes = E + B + 1
    first, second = runner.run_epoch(), runner.run_epoch()
    assert first["is_event"] and not second["is_event"]
    (closed,) = second["windows_closed"]
    assert (closed["closed_by"], closed["noise_draws_eval"]) == ("duration", E + 2)
    assert closed["noise_draws_train"] == B
    loss, acc = runner._evaluate(runner.data.x_test, runner.data.y_test)  # no window is open
    assert (second["test_loss"], second["test_acc"]) == (loss, acc)


def test_zeroed_units_stay_zero_through_evaluation_passes_and_restore_on_the_last(data_dir):
    cfg = _cfg(data_dir, mode="zeroing", variant="cumulative", restore=True, steps=0)
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    pert = runner.method.perturbation
    assert pert.passes == 0  # "Zeroing 1": only the first post-event test batch
    conv1, bn1 = pert.layers["conv1"], pert.bns["conv1"]
    w0 = conv1.weight.detach().clone()
    pert.on_event(0, {"conv1": torch.tensor([True] + [False] * 7)})
    assert conv1.weight[0].abs().sum() > 0  # official: nothing happens before the first pass
    pert.before_eval_batch()  # the pass perturbs, then its budget is spent: restored at once
    assert torch.equal(conv1.weight.detach(), w0) and pert.open_layers() == []
    cfg = _cfg(data_dir, mode="zeroing", variant="cumulative", restore=True, steps=1)
    pert = TrialRunner(cfg, device="cpu", num_threads=1).method.perturbation
    conv1, bn1 = pert.layers["conv1"], pert.bns["conv1"]
    w0, g0 = conv1.weight.detach().clone(), bn1.weight.detach().clone()
    pert.on_event(0, {"conv1": torch.tensor([True] + [False] * 7)})
    assert pert.passes == E + 1  # "1" training step: N + 1 = E + 2 passes
    for pass_ in (*[pert.before_eval_batch] * E, pert.before_step):
        pass_()
        assert (conv1.weight[0] == 0).all() and bn1.weight[0] == 0 and bn1.bias[0] == 0
    pert.before_step()  # the pass that spends the budget zeroes, then restores before its forward
    assert torch.equal(conv1.weight.detach(), w0) and torch.equal(bn1.weight.detach(), g0)
    assert pert.take_closed()[0]["noise_draws_train"] == 2


# --- (b) the preset's VGG11 schedule (bartoldson2020-noise) ---------------------------------------

VGG = [  # F5_* / FD2_*: prune_frac [.3, .3, .3, .9], start [3, 4, 5, 6], end [150, 150, 150, 275]
    ("conv5", 0.3, 3, 150),
    ("conv6", 0.3, 4, 150),
    ("conv7", 0.3, 5, 150),
    ("conv8", 0.9, 6, 275),
]


def _vgg_oracle(n_passes: int, e: int, n_units: int = 512) -> list[official.OfficialWindow]:
    layers = [official.Layer(n, n_units, f, s, t) for n, f, s, t in VGG]
    return official.simulate(layers, 40, 325, n_passes, e, 391)


def test_pass_budget_inverts_the_legend_conversion():
    for e, b in ((1, 1), (4, 12), (40, 7), (79, 391)):
        for steps in range(3 * b + 4):
            n = official_passes_for_steps(steps, e, b)
            smallest = next(
                x for x in range(10**6) if official_passes_to_training_steps(x, e, b) == steps
            )
            assert n == smallest, (e, b, steps)
    # the official cfgs: F5 (test batch 128, E = 79), FD2 (test batch 256, E = 40)
    assert [official_passes_for_steps(s, 79, 391) for s in (0, 50, 1105)] == [0, 129, 1500]
    assert [official_passes_for_steps(s, 40, 391) for s in (89, 630, 1220, 2480)] == [
        129,
        750,
        1500,
        3000,
    ]


def test_fig5_windows_from_the_oracle():
    by_n = {n: _vgg_oracle(n, 79) for n in (0, 129, 1500)}
    for n, (train, evals) in {0: (0, 1), 129: (51, 79), 1500: (1106, 395)}.items():
        windows = by_n[n]
        assert len(windows) == 3 * 4 + 7  # every event targets units (k > 0)
        assert {(w.train, w.eval, w.closed_by) for w in windows} == {(train, evals, "duration")}
        assert train + evals == n + 1
    # "Gaussian 1105": conv6's window (event 4) is still open at conv8's event (epoch 6) and
    # runs to its end; one shared window would have been cut there
    conv6 = next(w for w in by_n[1500] if (w.layer, w.event_epoch) == ("conv6", 4))
    assert conv6.closed_epoch == 7 > 6
    assert [w.units for w in by_n[0] if w.layer == "conv5"] == [38, 38, 38, 39]


def test_fig_d2_windows_from_the_oracle_and_the_presets_eval_batch():
    # FD2 ran at test batch 256 (E = 40); the preset evaluates at 128 (E = 79) for all its runs.
    # For these zeroing windows the training passes perturbed are the same at both E, and no
    # window ends inside an evaluation, so training and every accuracy are the same; only the
    # count of evaluation passes differs.
    for steps, train in ((89, 90), (630, 631), (1220, 1221), (2480, 2481)):
        at_40 = _vgg_oracle(official_passes_for_steps(steps, 40, 391), 40)
        at_79 = _vgg_oracle(official_passes_for_steps(steps, 79, 391), 79)
        for ws in (at_40, at_79):
            assert {(w.train, w.closed_by) for w in ws} == {(train, "duration")}
        spans = [(w.event_epoch, w.closed_epoch) for w in at_40]
        assert spans == [(w.event_epoch, w.closed_epoch) for w in at_79]
    assert {w.eval for w in _vgg_oracle(3000, 40)} == {520}


def _drive(method: PerturbationPruning, runner, epochs: int, e: int, b: int) -> list[dict]:
    """The hook order of TrialRunner.run_epoch, without the arithmetic of training."""
    records = []
    for epoch in range(epochs):
        for _ in range(b):
            method.before_step(runner)
            method.after_step(runner)
        for _ in range(e):
            method.before_eval_batch(runner)
        changed = method.event(runner, epoch)
        if changed is not None:
            for _ in range(e):
                method.before_eval_batch(runner)
        record = {"epoch": epoch, "units_removed": None, "windows_closed": None}
        record["is_event"] = bool(changed)  # as the loop sets it before end_epoch
        if changed:
            record["units_removed"] = [{"layer": k, "units": v} for k, v in changed.items()]
        method.end_epoch(runner, record)
        records.append(record)
    return records


@pytest.mark.parametrize("steps", [0, 50, 1105])
def test_vgg11_windows_of_prunetune_match_the_oracle(steps):
    from trainables.models import build_model

    model = build_model("vgg11_bn", 8, (3, 32, 32), 10)  # width 8: conv5..8 have 64 units
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"name": "cifar10"},
            "model": {"name": "vgg11_bn", "width": 8},
            "train": {"epochs": 325, "batch_size": 128, "eval_batch_size": 128},
            "pruning": {
                "method": "schedule",
                "target": "largest",
                "period": 40,
                "perturbation": {"mode": "zeroing", "steps": steps, "eval_passes": "official"},
            },
        }
    )
    runner = SimpleNamespace(
        cfg=cfg,
        model=model,
        masks=MaskSet(model, "filter"),
        data=SimpleNamespace(y_train=torch.empty(50_000), y_test=torch.empty(10_000)),
        loop=SimpleNamespace(generators={"targets": torch.Generator()}),
    )
    method = PerturbationPruning(runner)
    n = official_passes_for_steps(steps, 79, 391)
    assert method.perturbation.passes == n
    records = _drive(method, runner, 325, 79, 391)
    history = [{**r, "status": "running"} for r in records]
    expected = official.rows(_vgg_oracle(n, 79, n_units=64))
    assert _layer_event_rows(history) == expected
