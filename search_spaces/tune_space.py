"""Adapter: StudyPlan pieces -> Ray Tune param spaces (the only module here that imports Ray).

Both spaces put the trial under ``config["trial"]`` as ``TrialConfig.to_dict()`` data, which is
what ``trainables.tune_trainable.train_fn`` reads. The orchestrator adds ``checkpoint_frequency``
(and, for Optuna, ``seeds``, wrapping OptunaSearch in a Repeater over them).

OptunaSearch with a nested param space (checked against ray 2.60's ``optuna_search.py`` and
``search_generator.py``, and by tests/search_spaces/test_tune_space.py): ``convert_search_space``
flattens the space with ``/`` joins and turns only the Domain leaves into Optuna distributions
(constants, lists included, are left alone); ``suggest`` returns the suggestion unflattened
(``{"trial": {"pruning": {"target": ...}}}``), and the SearchGenerator deep-merges it into the
param space, so every trial gets a complete nested ``config["trial"]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ray import tune

from search_spaces.expand import OptunaPlan
from trainables.config import TrialConfig


def optuna_param_space(plan: OptunaPlan) -> dict[str, Any]:
    """``{"trial": base dict with a Tune Domain at every searched leaf}`` for OptunaSearch.

    uniform -> tune.uniform, loguniform -> tune.loguniform, int [low, high] -> tune.randint(low,
    high + 1) (Tune's upper bound is exclusive; OptunaSearch maps it back to Optuna's inclusive
    IntDistribution(low, high)), choice -> tune.choice.
    """
    trial = copy.deepcopy(plan.base)
    for path, kind, args in plan.distributions:
        *parents, last = path.split(".")
        node = trial
        for part in parents:
            node = node[part]
        node[last] = _domain(kind, args)
    return {"trial": trial}


def _domain(kind: str, args: tuple[Any, ...]) -> tune.search.sample.Domain:
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "int":
        return tune.randint(args[0], args[1] + 1)
    if kind == "choice":
        return tune.choice(list(args))
    raise ValueError(f"unknown distribution kind {kind!r}")


def grid_param_space(trials: Sequence[TrialConfig]) -> dict[str, Any]:
    """``{"trial": tune.grid_search([...])}``: one Tune trial per TrialConfig, in order."""
    return {"trial": tune.grid_search([t.to_dict() for t in trials])}
