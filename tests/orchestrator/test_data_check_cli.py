"""Data problems found before anything starts (exit 2, one line, nothing written), and the CLI's
``--smoke`` without Ray: ``show --smoke`` and ``run --smoke --dry-run``."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli.app import main
from search_spaces.spec import spec_from_yaml
from search_spaces.yaml_io import dump_yaml
from trainables import datasets


def _spec_file(tmp_path, dataset: dict, name: str = "data") -> str:
    """A one-trial spec (on the old code, a run that starts Ray and fails inside its trial)."""
    model = "vgg11_bn" if dataset["name"] == "cifar10" else "mlp"
    layer = "conv8" if model == "vgg11_bn" else "fc1"
    spec = {
        "name": name,
        "dataset": dataset,
        "model": {"name": model, "width": 8},
        "train": {"epochs": 1},
        "pruning": {
            "method": "schedule",
            "layers": [{"name": layer, "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}],
        },
        "baselines": False,
        "retries": 0,
        "storage": str(tmp_path / "studies"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_yaml(spec))
    return str(path)


def _one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    return lines[0].removeprefix("prunetune: error: ")


def test_absent_cifar10_is_refused_before_ray_starts(tmp_path, capsys):
    data = tmp_path / "no-data"
    spec = _spec_file(tmp_path, {"name": "cifar10", "data_dir": str(data)})

    code = main(["run", spec])

    assert code == 2
    line = _one_error_line(capsys)
    assert line.startswith(
        f"dataset.data_dir: CIFAR-10 (dataset.name cifar10) is not in {data}/cifar-10-batches-py "
        "(missing data_batch_1); set dataset.download: true (needs the internet), copy "
    )
    assert line.endswith("or add --smoke (synthetic data; its numbers say nothing of the paper)")
    assert not (tmp_path / "studies").exists() and not data.exists()


def test_absent_cifar10_with_an_unreachable_download_server_is_refused(
    tmp_path, capsys, monkeypatch
):
    spec = _spec_file(tmp_path, {"name": "cifar10", "data_dir": str(tmp_path), "download": True})
    monkeypatch.setattr(datasets, "download_urls", lambda info: ("http://127.0.0.1:9/cifar.tgz",))

    assert main(["run", spec]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("dataset.download: CIFAR-10 (dataset.name cifar10) is not in ")
    assert "its download server http://127.0.0.1:9/cifar.tgz cannot be reached" in line
    assert not (tmp_path / "studies").exists()


def test_absent_data_makes_the_dry_run_say_refused(tmp_path, capsys):
    spec = _spec_file(tmp_path, {"name": "cifar10", "data_dir": str(tmp_path / "none")})
    assert main(["run", spec, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["action"] == "refused"
    assert plan["reason"].startswith("dataset.data_dir: CIFAR-10 (dataset.name cifar10) is not")


def test_a_validation_split_leaving_no_training_examples_is_refused(tmp_path, capsys, data_dir):
    dataset = {"name": "mnist1d", "data_dir": data_dir, "num_samples": 10}
    spec = _spec_file(tmp_path, dataset | {"validation_fraction": 0.9})

    assert main(["run", spec]) == 2
    assert _one_error_line(capsys) == (
        "dataset.validation_fraction: leaves no training examples (8 of the 8 of MNIST-1D held "
        "out), got 0.9"
    )
    assert not (tmp_path / "studies").exists()


def test_val_selected_without_validation_examples_is_refused(tmp_path, capsys, data_dir):
    spec = _spec_file(tmp_path, {"name": "mnist1d", "data_dir": data_dir})
    assert main(["run", spec, "generalization=val_selected"]) == 2
    assert _one_error_line(capsys) == (
        "dataset.validation_fraction: must be > 0 for generalization val_selected, got 0.0"
    )


def test_show_smoke_prints_the_spec_run_smoke_runs(tmp_path, capsys):
    assert main(["show", "bartoldson2020-vgg11", f"dataset.data_dir={tmp_path}", "--smoke"]) == 0
    out, err = capsys.readouterr()
    spec = spec_from_yaml(out)
    assert spec.name == "bartoldson2020-vgg11-smoke" and spec.train.epochs == 4
    assert spec.dataset.synthetic and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("preset", ["quickstart", "bartoldson2020-noise"])
def test_smoke_dry_run_plans_the_smoke_study_and_writes_nothing(preset, tmp_path, capsys):
    storage = tmp_path / "studies"
    argv = ["run", preset, f"dataset.data_dir={tmp_path / 'd'}", "--smoke", "--dry-run", "--json"]

    assert main([*argv, "--storage", str(storage)]) == 0

    plan = json.loads(capsys.readouterr().out)
    assert plan["study"] == str(storage / f"{preset}-smoke")
    assert plan["action"] == "start"
    assert plan["trials"]["total"] == {"quickstart": 10, "bartoldson2020-noise": 12}[preset]
    assert plan["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.0}
    assert not storage.exists() and not (tmp_path / "d").exists()
