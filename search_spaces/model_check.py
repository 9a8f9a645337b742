"""The spec-time check of the model-dependent rules: does each model accept its dataset, have what
the scores, targets, methods, perturbation modes and settings ask of it
(``trainables.models.needs``), and have the layers the spec names?

The rules are ``trainables.cross_rules.MODEL_RULES`` (written in ``trainables.models.rules``),
checked here on every consistent combination of the spec's values, so an impossible combination
is refused before anything starts; each trial checks the same rules again when it is built. Each
(model, width, dataset) the spec can produce is built once on PyTorch's ``meta`` device
(``trainables.models.facts_for``): this is the one place where validating a spec imports torch,
and only after the spec parsed.
"""

from __future__ import annotations

from typing import Any

from search_spaces.cross import check_rules
from trainables.cross_rules import MODEL_RULES
from trainables.problems import Problems


def check_models(spec: Any, problems: Problems) -> None:
    """Every model rule on every consistent combination of the spec's values."""
    check_rules(MODEL_RULES, spec, problems)
