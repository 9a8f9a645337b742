"""Adapter: an OptunaPlan's searched fields -> Optuna distributions (the only module here that
imports Optuna).

The mapping is the one Tune's OptunaSearch applies to the Domains of
:func:`search_spaces.tune_space.optuna_param_space` (tests/search_spaces/test_optuna_space.py
checks it against ``OptunaSearch.convert_search_space``): uniform -> ``FloatDistribution(low,
high)``, loguniform -> ``FloatDistribution(low, high, log=True)``, int ``[low, high]`` ->
``IntDistribution(low, high)`` (both ends inclusive), choice -> ``CategoricalDistribution``.

Parameters are named by their spec path (``pruning.target``), as the spec and the report name
them; OptunaSearch's own name for the same parameter is its flattened Tune path
(``trial/pruning/target``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def optuna_distributions(
    distributions: Sequence[tuple[str, str, tuple[Any, ...]]],
) -> dict[str, BaseDistribution]:
    """``{spec path: distribution}`` for ``OptunaPlan.distributions`` (``(path, kind, args)``)."""
    return {path: _distribution(kind, args) for path, kind, args in distributions}


def _distribution(kind: str, args: tuple[Any, ...]) -> BaseDistribution:
    if kind == "uniform":
        return FloatDistribution(args[0], args[1])
    if kind == "loguniform":
        return FloatDistribution(args[0], args[1], log=True)
    if kind == "int":
        return IntDistribution(args[0], args[1])
    if kind == "choice":
        return CategoricalDistribution(args)
    raise ValueError(f"unknown distribution kind {kind!r}")
