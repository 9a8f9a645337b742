"""Study specs: typed, validated at load; sweeps, presets, expansion into trials.

Public API (the orchestrator's entry points):

- ``search_spaces.spec``: ``load_spec(source, *, name=None, storage=None) -> StudySpec`` (a YAML
  path or a preset name), ``spec_from_yaml(text, source)``, ``spec_from_dict(data)``;
  ``StudySpec.hash``, ``.to_yaml()``, ``.canonical_dict()``. Bad input raises one UserError
  listing every problem, one ``field.path: rule, got value`` per line.
- ``search_spaces.sweeps``: the sweep convention (single value, list = grid, distribution
  mapping, grid of sections).
- ``search_spaces.expand``: ``expand(spec) -> StudyPlan`` (trials, OptunaPlan, settings);
  ``search_spaces.summary``: ``plan_summary(plan) -> dict``.
- ``search_spaces.tune_space`` (imports Ray): ``grid_param_space(trials)``,
  ``optuna_param_space(optuna_plan)``.
- ``search_spaces.optuna_space`` (imports Optuna): ``optuna_distributions(distributions)``, the
  Optuna distributions OptunaSearch uses for ``OptunaPlan.distributions``.
- ``search_spaces.presets``: ``list_presets()``, ``preset_text(name)``, ``preset_description(name)``.
"""
