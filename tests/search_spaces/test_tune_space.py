"""The Tune adapter: OptunaSearch accepts the nested param space; grid spaces round-trip.

No Ray cluster is started: OptunaSearch and Tune's variant generator run in-process.
"""

from __future__ import annotations

import copy

from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import generate_variants
from ray.tune.utils.util import merge_dicts
from spec_examples import OPTUNA

from search_spaces.expand import expand
from search_spaces.spec import load_spec, spec_from_yaml
from search_spaces.tune_space import grid_param_space, optuna_param_space
from trainables.config import TrialConfig


def test_optuna_search_accepts_the_nested_space() -> None:
    plan = expand(spec_from_yaml(OPTUNA)).optuna
    space = optuna_param_space(plan)
    searcher = OptunaSearch(metric=plan.metric, mode=plan.mode, seed=plan.seed)
    assert searcher.set_search_properties(plan.metric, plan.mode, space)
    dists = {name: repr(d) for name, d in searcher._space.items()}
    assert set(dists) == {
        "trial/pruning/imp/rewind",
        "trial/pruning/imp/rounds",
        "trial/pruning/imp/fraction",
    }
    assert "IntDistribution(high=3, log=False, low=1, step=1)" == dists["trial/pruning/imp/rounds"]
    seen = set()
    for i in range(14):  # past TPE's 10 startup trials
        suggestion = searcher.suggest(f"t{i}")
        config = merge_dicts(copy.deepcopy(space), suggestion)  # what Tune's SearchGenerator does
        trial = TrialConfig.from_dict(config["trial"])
        assert trial.pruning.imp.rewind in ("lr", "weight")
        assert 1 <= trial.pruning.imp.rounds <= 3 and 0.1 <= trial.pruning.imp.fraction <= 0.3
        assert trial.train == TrialConfig.from_dict(plan.base).train  # constants survive the merge
        seen.add(trial.pruning.imp.rounds)
        searcher.on_trial_complete(f"t{i}", {"test_acc": 0.5 + 0.01 * i, "training_iteration": 1})
    assert len(seen) > 1


def test_optuna_space_leaves_base_untouched() -> None:
    plan = expand(spec_from_yaml(OPTUNA)).optuna
    before = copy.deepcopy(plan.base)
    optuna_param_space(plan)
    assert plan.base == before


def test_grid_space_yields_the_trials_in_order() -> None:
    plan = expand(load_spec("quickstart"))
    variants = [config for _, config in generate_variants(grid_param_space(plan.trials))]
    assert [TrialConfig.from_dict(v["trial"]) for v in variants] == list(plan.trials)
