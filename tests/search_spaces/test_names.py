"""Validation reads dataset and model names from the registries themselves (one list each)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search_spaces.spec import spec_from_yaml
from trainables import datasets, models
from trainables.errors import UserError


def test_valid_names_are_the_registries() -> None:
    with pytest.raises(UserError) as err:
        spec_from_yaml("name: t\nmodel: {name: nope}\ndataset: {name: nope}\n")
    lines = str(err.value).splitlines()
    assert (
        f"dataset.name: unknown dataset 'nope'; choose one of: {', '.join(datasets.NAMES)}" in lines
    )
    assert f"model.name: unknown model 'nope'; choose one of: {', '.join(models.NAMES)}" in lines
    assert models.NAMES == tuple(sorted(models.MODELS))
    assert datasets.NAMES == tuple(sorted(datasets.DATASETS))


def test_search_spaces_validation_imports_no_ray() -> None:
    code = (
        "import sys; from search_spaces.spec import load_spec; from search_spaces.expand import expand; "
        "from search_spaces.summary import plan_summary; plan_summary(expand(load_spec('quickstart'))); "
        "assert 'ray' not in sys.modules and 'optuna' not in sys.modules, 'imported ray/optuna'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_registries_and_the_config_import_no_torch() -> None:
    code = (
        "import sys; import trainables.config, trainables.models, trainables.datasets, "
        "trainables.identity, trainables.records; assert 'torch' not in sys.modules, 'torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
