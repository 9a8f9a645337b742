"""The spec loader's error table: each bad spec and its EXACT message (one problem per line).

Every rule kind is covered: YAML syntax, duplicate keys, unknown keys, wrong types (no casting),
ranges, unknown names, sweeps used wrongly, cross-field rules, model-dependent checks, and
several problems reported at once.
"""

from __future__ import annotations

import pytest

from search_spaces.spec import METRICS, load_spec, spec_from_yaml
from trainables.errors import UserError

BAD_SPECS = [
    (
        "yaml syntax",
        "name: t\ntrain: {lr: 1.0e-3\n",
        "<spec>: invalid YAML at line 3, column 1: expected ',' or '}', but got '<stream end>'",
    ),
    (
        "duplicate key",
        "name: t\ntrain:\n  lr: 0.1\n  lr: 0.2\n",
        '<spec>: invalid YAML at line 4, column 3: found duplicate key "lr" with value "0.2" '
        '(original value: "0.1")',
    ),
    (
        "yaml 1.2: yes is a string",
        "name: t\nbaselines: yes\n",
        "baselines: must be true or false, got 'yes'",
    ),
    (
        "not a mapping",
        "- a\n- b\n",
        "<spec>: must be a mapping of spec fields, got a list",
    ),
    (
        "empty doc",
        "",
        "<spec>: must be a mapping of spec fields, got an empty document",
    ),
    (
        "unknown top key",
        "name: t\nepochz: 3\n",
        "epochz: unknown key; valid keys: baselines, checkpoint_frequency, dataset, fits, flatness, generalization, max_concurrent_trials, model, name, per_example_loss, pruning, report_batch_s, report_every, resources, retries, search, seeds, storage, train",
    ),
    (
        "unknown section key",
        "name: t\ntrain: {lrr: 0.1}\n",
        "train.lrr: unknown key; valid keys: batch_size, bf16, channels_last, epochs, eval_batch_size, gamma, lr, milestones, momentum, nesterov, optimizer, weight_decay",
    ),
    (
        "quoted float",
        "name: t\ntrain: {lr: '1e-3'}\n",
        "train.lr: must be a number, got '1e-3'",
    ),
    (
        "float for int",
        "name: t\ntrain: {epochs: 10.5}\n",
        "train.epochs: must be an integer, got 10.5",
    ),
    (
        "string for bool",
        "name: t\ndataset: {augment: 'yes'}\n",
        "dataset.augment: must be true or false, got 'yes'",
    ),
    (
        "literal",
        "name: t\ntrain: {optimizer: adamw}\n",
        "train.optimizer: must be one of adam, sgd, got 'adamw'",
    ),
    (
        "negative report interval",
        "name: t\nreport_every: -1\n",
        "report_every: must be >= 0, got -1",
    ),
    (
        "unknown model",
        "name: t\nmodel: {name: vgg12}\n",
        "model.name: unknown model 'vgg12'; choose one of: cnn1d, lenet, mlp, openlth_resnet20, resnet18, resnet20, resnet56, vgg11_bn, vgg16",
    ),
    (
        "unknown dataset",
        "name: t\ndataset: {name: mnist2d}\n",
        "dataset.name: unknown dataset 'mnist2d'; choose one of: cifar10, cifar100, mnist, mnist1d",
    ),
    (
        "period",
        "name: t\npruning: {period: 0}\n",
        "pruning.period: must be >= 1, got 0",
    ),
    (
        "fractions",
        "name: t\ndataset: {label_noise_fraction: 1.5, validation_fraction: 1.0}\n",
        "dataset.label_noise_fraction: must be in [0, 1], got 1.5\ndataset.validation_fraction: must be in [0, 1), got 1.0",
    ),
    (
        "milestones",
        "name: t\ntrain: {epochs: 10, milestones: [8, 4]}\n",
        "train.milestones: must be strictly increasing, got [8, 4]",
    ),
    (
        "milestones epochs",
        "name: t\ntrain: {epochs: 10, milestones: [4, 10]}\n",
        "train.milestones[1]: must be < train.epochs (10), got 10",
    ),
    (
        "layer keys",
        "name: t\nmodel: {name: mlp}\npruning: {method: schedule, layers: [{name: fc1, final_fraction: 0.5, start_epoch: 1, stop_epoch: 5}]}\n",
        "pruning.layers[0].stop_epoch: unknown key; valid keys: name, final_fraction, start_epoch, end_epoch\npruning.layers[0].end_epoch: missing; every layer needs name, final_fraction, start_epoch, end_epoch",
    ),
    (
        "layer ranges",
        "name: t\nmodel: {name: mlp}\ntrain: {epochs: 10}\npruning: {method: schedule, layers: [{name: fc1, final_fraction: 1.0, start_epoch: 4, end_epoch: 10}]}\n",
        "pruning.layers[0].final_fraction: must be in [0, 1), got 1.0",
    ),
    (
        "unknown layer",
        "name: t\nmodel: {name: mlp}\ntrain: {epochs: 10}\npruning: {method: schedule, layers: [{name: fc3, final_fraction: 0.5, start_epoch: 1, end_epoch: 5}]}\n",
        "pruning.layers[0].name: unknown layer 'fc3' of model mlp; choose one of: fc1, fc2",
    ),
    (
        "default schedule too long",
        "name: t\ndataset: {name: cifar10}\nmodel: {name: vgg11_bn}\ntrain: {epochs: 100}\npruning: {method: schedule}\n",
        "pruning.layers: empty means model vgg11_bn's default schedule, which prunes until epoch 275; that must be < train.epochs (100): list the layers",
    ),
    (
        "dist with grid",
        "name: t\ntrain: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n",
        "train.lr: a distribution needs search.algorithm random or optuna, got grid",
    ),
    (
        "uniform on int",
        "name: t\nsearch: {algorithm: random, num_samples: 2}\ntrain: {epochs: {uniform: [1, 5]}}\n",
        "train.epochs.uniform: applies to float fields; for this field use int",
    ),
    (
        "int on float",
        "name: t\nsearch: {algorithm: random, num_samples: 2}\ntrain: {lr: {int: [1, 5]}}\n",
        "train.lr.int: applies to integer fields; for this field use uniform or loguniform",
    ),
    (
        "loguniform low 0",
        "name: t\nsearch: {algorithm: random, num_samples: 2}\ntrain: {lr: {loguniform: [0, 1]}}\n",
        "train.lr.loguniform: needs low > 0, got 0.0",
    ),
    (
        "low >= high",
        "name: t\nsearch: {algorithm: random, num_samples: 2}\ntrain: {lr: {uniform: [0.5, 0.1]}}\n",
        "train.lr.uniform: must be [low, high] with low < high, got [0.5, 0.1]",
    ),
    (
        "bad dist key",
        "name: t\ntrain: {lr: {normal: [0, 1]}}\n",
        "train.lr: must be a single value, a list (grid) or a distribution with one key of uniform, loguniform, int, choice, got a mapping with keys normal",
    ),
    (
        "choice one",
        "name: t\nsearch: {algorithm: random, num_samples: 2}\npruning: {target: {choice: [smallest]}}\n",
        "pruning.target.choice: must be a list of at least 2 values, got ['smallest']",
    ),
    (
        "grid dupes",
        "name: t\npruning: {target: [smallest, largest, smallest]}\n",
        "pruning.target[2]: grid values must be distinct, got 'smallest' twice",
    ),
    (
        "empty grid",
        "name: t\ntrain: {lr: []}\n",
        "train.lr: an empty list is not a grid; give at least one value",
    ),
    (
        "mixed list field",
        "name: t\ntrain: {epochs: 10, milestones: [[2], 3]}\n",
        "train.milestones: mixes lists and single items; a grid over a list field is a list of lists",
    ),
    (
        "grid values ranges",
        "name: t\ntrain: {lr: [0.1, -0.1]}\n",
        "train.lr[1]: must be > 0, got -0.1",
    ),
    (
        "optuna non-pruning",
        "name: t\nsearch: {algorithm: optuna, num_samples: 4}\ntrain: {lr: [0.1, 0.01]}\npruning: {method: schedule, target: [smallest, largest]}\n",
        "train.lr: with search.algorithm optuna only pruning fields may be swept (the baselines must match every trial), got [0.1, 0.01]",
    ),
    (
        "optuna list field",
        "name: t\nsearch: {algorithm: optuna, num_samples: 4}\nmodel: {name: mlp}\ntrain: {epochs: 10}\npruning: {method: schedule, period: {int: [1, 3]}, layers: [[{name: fc1, final_fraction: 0.5, start_epoch: 1, end_epoch: 5}], [{name: fc2, final_fraction: 0.5, start_epoch: 1, end_epoch: 5}]]}\n",
        "pruning.layers: optuna cannot search a list field; use search.algorithm grid or random",
    ),
    (
        "optuna nothing",
        "name: t\nsearch: {algorithm: optuna, num_samples: 4}\n",
        "search.algorithm: optuna needs at least one swept pruning field, got none",
    ),
    (
        "grid num_samples",
        "name: t\nsearch: {num_samples: 5}\n",
        "search.num_samples: does nothing with search.algorithm grid (it acts only when search.algorithm is random or optuna; the grids and seeds set a grid's trials); remove it",
    ),
    (
        "seeds zero",
        "name: t\nseeds: 0\n",
        "seeds: a seed count must be >= 1, got 0",
    ),
    (
        "seeds dupes",
        "name: t\nseeds: [1, 2, 1]\n",
        "seeds[2]: seeds must be distinct, got 1 twice",
    ),
    (
        "seeds type",
        "name: t\nseeds: three\n",
        "seeds: must be a count or a non-empty list of integers, got 'three'",
    ),
    (
        "gpu",
        "name: t\nresources: {cpu: 0, gpu: 1.5}\n",
        "resources.cpu: must be > 0, got 0.0\nresources.gpu: must be a fraction below 1 or a whole number, got 1.5",
    ),
    (
        "name",
        "name: my study\n",
        "name: must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, got 'my study'",
    ),
    (
        "no name",
        "train: {lr: 0.1}\n",
        "name: missing; every study needs a name",
    ),
    (
        "magnitude filter",
        "name: t\npruning: {method: schedule, granularity: filter, score: magnitude}\n",
        "pruning.score: magnitude needs pruning.granularity weight, got filter",
    ),
    (
        "activations on a model without residual blocks",
        "name: t\ndataset: {name: cifar10}\nmodel: {name: vgg11_bn}\ntrain: {epochs: 300}\npruning: {method: schedule, score: activations}\n",
        "pruning.score: activations needs a model with residual blocks, got vgg11_bn (models with "
        "it: openlth_resnet20, resnet18, resnet20, resnet56)",
    ),
    (
        "activations on the stem",
        "name: t\ndataset: {name: cifar10}\nmodel: {name: resnet20}\npruning: {method: schedule, score: activations, layers: [{name: conv1, final_fraction: 0.5, start_epoch: 1, end_epoch: 2}]}\n",
        "pruning.layers[0].name: the 'activations' score ranks residual block convs only, got 'conv1'",
    ),
    (
        "activations weight",
        "name: t\ndataset: {name: cifar10}\nmodel: {name: resnet18}\ntrain: {epochs: 325}\n"
        "pruning: {method: schedule, granularity: weight, score: activations}\n",
        "pruning.score: activations needs pruning.granularity filter, got weight",
    ),
    (
        "scratch schedule",
        "name: t\nmodel: {name: mlp}\npruning: {method: schedule, scratch: true, layers: [{name: fc1, final_fraction: 0.5, start_epoch: 3, end_epoch: 3}]}\n",
        "pruning.layers[0].start_epoch: must be 0 when pruning.scratch is true, got 3\npruning.layers[0].end_epoch: must be 0 when pruning.scratch is true, got 3",
    ),
    (
        "perturbation needs schedule",
        "name: t\npruning: {perturbation: {mode: zeroing, steps: 3}}\n",
        "pruning.perturbation.mode: zeroing needs pruning.method schedule, got none",
    ),
    (
        "imp rounds",
        "name: t\npruning: {method: imp, granularity: weight}\n",
        "pruning.imp.rounds: must be >= 1 when pruning.method is imp, got 0",
    ),
    (
        "val_selected",
        "name: t\ngeneralization: val_selected\n",
        "dataset.validation_fraction: must be > 0 for generalization val_selected, got 0.0",
    ),
    (
        "augment mnist1d",
        "name: t\ndataset: {name: mnist1d, augment: true}\n",
        "dataset.augment: true needs dataset.name cifar10, cifar100 or mnist, got mnist1d",
    ),
    (
        "section not mapping",
        "name: t\ntrain: 5\n",
        "train: must be a mapping, got 5",
    ),
    (
        "section grid item",
        "name: t\npruning:\n  perturbation:\n    - {mode: zeroing, steps: -1}\n    - {mode: gaussian, variant: cumu}\n",
        "pruning.perturbation[0].steps: must be >= 0, got -1\npruning.perturbation[1].variant: must be one of iter, cumulative, got 'cumu'\npruning.perturbation[0].mode: zeroing needs pruning.method schedule, got none\npruning.perturbation[1].mode: gaussian needs pruning.method schedule, got none",
    ),
    (
        "section grid cross",
        "name: t\npruning:\n  method: [none, schedule]\n  perturbation:\n    - {mode: none}\n    - {mode: zeroing, steps: 5}\n",
        "pruning.perturbation[1].mode: zeroing needs pruning.method schedule, got none",
    ),
    (
        "inf",
        "name: t\ntrain: {lr: .inf}\n",
        "train.lr: must be a finite number, got inf",
    ),
    (
        "several",
        "name: t\ntrain: {lr: -1, epochs: 0}\nmodel: {name: vgg12}\nfoo: 1\n",
        "foo: unknown key; valid keys: baselines, checkpoint_frequency, dataset, fits, flatness, generalization, max_concurrent_trials, model, name, per_example_loss, pruning, report_batch_s, report_every, resources, retries, search, seeds, storage, train\nmodel.name: unknown model 'vgg12'; choose one of: cnn1d, lenet, mlp, openlth_resnet20, resnet18, resnet20, resnet56, vgg11_bn, vgg16\ntrain.lr: must be > 0, got -1.0\ntrain.epochs: must be >= 1, got 0",
    ),
]


@pytest.mark.parametrize(("label", "text", "message"), BAD_SPECS, ids=[r[0] for r in BAD_SPECS])
def test_bad_spec_message(label: str, text: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        spec_from_yaml(text)
    assert str(info.value) == message


def test_table_covers_enough_rules() -> None:
    assert len(BAD_SPECS) >= 15
    assert any("\n" in message for _, _, message in BAD_SPECS)  # several problems at once


def test_problem_lines_name_a_field_and_the_value() -> None:
    for _, _, message in BAD_SPECS:
        for line in message.splitlines():
            path, _, rule = line.partition(": ")
            assert path and rule, line
            assert " " not in path or path.startswith("<spec>"), line


def test_unknown_metric_lists_the_record_keys() -> None:
    with pytest.raises(UserError) as info:
        spec_from_yaml("name: t\nsearch: {metric: accuracy}\n")
    valid = ", ".join(METRICS)
    assert str(info.value) == f"search.metric: unknown metric 'accuracy'; choose one of: {valid}"
    assert "test_acc" in METRICS and "status" not in METRICS and "epoch" not in METRICS


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(
        UserError, match=r"unknown preset 'quickstrat'; choose one of: .*quickstart"
    ):
        load_spec("quickstrat")


def test_missing_spec_file(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match="no such spec file"):
        load_spec(str(missing))


def test_syntax_error_names_the_file(tmp_path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: s\ntrain:\n  lr: [0.1\n")
    with pytest.raises(UserError, match=rf"^{path}: invalid YAML at line 4, column 1: "):
        load_spec(str(path))
