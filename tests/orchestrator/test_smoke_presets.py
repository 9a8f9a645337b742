"""Each paper preset's ``--smoke`` run through the real CLI on a real local Ray (2 CPUs): every arm
of the preset runs, the tables are exported with the preset's named fits, and the report is
written. About a minute per preset on 2 cores; CIFAR-10 is absent, so the data are synthetic."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from orchestrator.cli.app import main
from search_spaces.expand import expand
from search_spaces.presets import list_presets
from search_spaces.spec import load_spec
from trainables.config import TrialConfig
from trainables.cross_rules import value_at

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]

PAPER_PRESETS = [p for p in list_presets() if p != "quickstart"]
# The fields the papers' arms differ by (each a trials.parquet column, dots as underscores).
ARMS = (
    "model.name",
    "dataset.label_noise_fraction",
    "pruning.method",
    "pruning.score",
    "pruning.target",
    "pruning.period",
    "pruning.scratch",
    "pruning.perturbation.mode",
    "pruning.perturbation.variant",
    "pruning.perturbation.steps",
    "pruning.perturbation.restore",
    "pruning.imp.control",
)


def _arm(cfg: TrialConfig) -> tuple:
    return tuple(value_at(cfg, path) for path in ARMS)


def _row_arm(row: dict) -> tuple:
    return tuple(row[path.replace(".", "_")] for path in ARMS)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_preset_smoke_runs_every_arm_end_to_end(preset, local_ray, tmp_path, capsys):
    no_data = tmp_path / "no-data"
    argv = ["run", preset, f"dataset.data_dir={no_data}", "--smoke", "--storage", str(tmp_path)]

    code = main(argv)

    err = capsys.readouterr().err.splitlines()
    assert code == 0
    spec = load_spec(preset)
    full = [c for c in expand(spec).trials if c.seed == spec.seeds[0]]
    # MNIST-1D (the mini presets') is generated offline: it never needs a stand-in
    synthetic = {c.dataset.name for c in full} != {"mnist1d"}
    assert [line for line in err if "synthetic" in line] == [
        f"prunetune: --smoke: CIFAR-10 is not in {no_data}/cifar-10-batches-py: training on "
        "synthetic data of its shape and classes instead (the numbers say nothing about the paper)"
    ][: int(synthetic)]
    study = tmp_path / f"{preset}-smoke"
    trials = pq.read_table(study / "trials.parquet").to_pylist()
    assert sorted(map(_row_arm, trials)) == sorted(map(_arm, full))
    assert {t["status"] for t in trials} == {"ok"}
    assert {t["dataset_synthetic"] for t in trials} == {synthetic}
    for t in trials:
        if t["pruning_method"] == "schedule":
            assert t["n_events"] >= 1, t["trial_key"]
        if spec.flatness.epochs:
            assert t["hessian_topk_sum"] is not None and t["grad_noise_trace"] is not None
        if t["pruning_method"] == "imp":  # the dense training and 2 rounds, then for the
            # size-only control the final mask trained once more from the initialisation
            phases = 3 + (t["pruning_imp_control"] == "sparse_from_start")
            assert t["n_epochs"] == phases * t["train_epochs"], t["trial_key"]
    if spec.flatness.epochs:  # measured in every trial (inf: no rise within the grid)
        epochs = pq.read_table(study / "epochs.parquet", columns=["trial_key", "eps_flatness"])
        measured = {r["trial_key"] for r in epochs.to_pylist() if r["eps_flatness"] is not None}
        assert measured == {t["trial_key"] for t in trials}
    fits = set(pq.read_table(study / "fits.parquet").column("fit").to_pylist())
    assert {f.name for f in spec.fits} <= fits and "default" in fits
    assert (study / "report.html").stat().st_size > 0
