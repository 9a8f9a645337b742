"""The Optuna adapter gives the distributions OptunaSearch itself builds from the Tune space."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search.optuna import OptunaSearch
from spec_examples import OPTUNA

from search_spaces.expand import expand
from search_spaces.optuna_space import optuna_distributions
from search_spaces.spec import spec_from_yaml
from search_spaces.tune_space import optuna_param_space

LOGUNIFORM = OPTUNA.replace(
    "fraction: {uniform: [0.1, 0.3]}", "fraction: {loguniform: [0.05, 0.5]}"
)


@pytest.mark.parametrize("text", [OPTUNA, LOGUNIFORM])
def test_distributions_equal_optuna_searchs_own(text: str) -> None:
    plan = expand(spec_from_yaml(text)).optuna
    searchers = OptunaSearch.convert_search_space(optuna_param_space(plan))
    theirs = {name.removeprefix("trial/").replace("/", "."): d for name, d in searchers.items()}

    ours = optuna_distributions(plan.distributions)

    assert ours == theirs
    assert ours["pruning.imp.rounds"] == IntDistribution(1, 3)
    assert ours["pruning.imp.rewind"] == CategoricalDistribution(("lr", "weight"))
    log = "loguniform" in text
    assert ours["pruning.imp.fraction"] == FloatDistribution(
        *((0.05, 0.5) if log else (0.1, 0.3)), log=log
    )
