"""The literal name lists used by validation stay equal to the real registries."""

from __future__ import annotations

from search_spaces.model_check import DATASET_SHAPES
from search_spaces.rules import DATASETS, MODELS


def test_model_names_match_the_registry() -> None:
    from trainables.models import MODELS as REGISTRY

    assert MODELS == tuple(sorted(REGISTRY))


def test_dataset_names_match_the_registry() -> None:
    from trainables.data import DATASETS as REGISTRY

    assert DATASETS == tuple(sorted(REGISTRY))
    assert set(DATASET_SHAPES) == set(DATASETS)


def test_search_spaces_validation_imports_no_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from search_spaces.spec import load_spec; from search_spaces.expand import expand; "
        "from search_spaces.summary import plan_summary; plan_summary(expand(load_spec('quickstart'))); "
        "assert 'ray' not in sys.modules and 'optuna' not in sys.modules, 'imported ray/optuna'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
