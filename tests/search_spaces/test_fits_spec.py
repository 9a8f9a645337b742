"""The spec's ``fits`` section: shape, column names checked against trials.parquet, not hashed."""

from __future__ import annotations

import pytest

from results.tables.schema import CONFIG_FIELDS, TRIAL_FIELDS
from search_spaces.fits import NUMERIC, SCALAR, FitFilter, FitSpec, fits_from_spec_text
from search_spaces.spec import load_spec, spec_from_yaml
from trainables.errors import UserError

FITS = """
fits:
  - {name: fig3, x: mean_stability, y: generalization, group_by: pruning.period, levels: [trial]}
  - name: fig2_vgg
    x: mean_stability
    y: generalization
    where: [{pruning.target: smallest, pruning.period: [4, 40]},
            {pruning.target: largest, pruning.period: 40}]
  - {name: fig6, y: hessian_topk_sum, include: [pruned, unpruned, scratch], where: {}}
"""


def test_fits_parse_with_dotted_config_paths_stored_as_columns():
    spec = spec_from_yaml("name: s" + FITS)
    fig3, fig2, fig6 = spec.fits
    assert fig3 == FitSpec(
        name="fig3",
        x="mean_stability",
        y="generalization",
        group_by="pruning_period",
        levels=("trial",),
    )
    assert fig2.where == (
        (FitFilter("pruning_target", ("smallest",)), FitFilter("pruning_period", (4, 40))),
        (FitFilter("pruning_target", ("largest",)), FitFilter("pruning_period", (40,))),
    )
    assert (fig6.x, fig6.include, fig6.where, fig6.levels) == (
        "mean_instability",
        ("pruned", "unpruned", "scratch"),
        (),
        ("trial", "config"),
    )
    assert spec_from_yaml(spec.to_yaml()) == spec  # round trip through spec.yaml


def test_fits_are_not_hashed_so_a_study_can_gain_fits():
    text = load_spec("quickstart").to_yaml()
    with_fits = spec_from_yaml(text.replace("fits: []\n", FITS.lstrip("\n")))
    assert with_fits.fits and with_fits.hash == load_spec("quickstart").hash
    assert "fits" not in with_fits.canonical_dict()


def test_every_problem_at_once_with_its_path():
    bad = """name: s
fits:
  - {name: default, x: foo, y: pruning_target, include: [], group_by: pruning.layers, extra: 1}
  - {x: gain}
  - {name: a, x: gain, y: gain}
  - {name: b, where: {pruning.target: [smalest], pruning.period: [forty, 0], pruning.layers: []}}
  - {name: b, where: []}
  - 5
"""
    with pytest.raises(UserError) as err:
        spec_from_yaml(bad)
    lines = str(err.value).splitlines()
    numeric = ", ".join(NUMERIC)
    assert lines == [
        "fits[0].extra: unknown key; valid keys: name, x, y, include, where, group_by, levels, "
        "panel",
        "fits[0].name: 'default' names the default fits; choose another name",
        f"fits[0].x: unknown trials.parquet column 'foo'; choose one of: {numeric}",
        "fits[0].y: must be a numeric column, got 'pruning_target' (a text column)",
        "fits[0].include: must list at least one of pruned, unpruned, scratch, got []",
        "fits[0].group_by: must be a column of single values, got 'pruning_layers' "
        "(a list or struct column)",
        "fits[1].name: missing; every fit needs a name",
        "fits[2].y: must differ from x, got 'gain' for both",
        "fits[3].where.pruning.target[0]: must be one of smallest, largest, random, got 'smalest'",
        "fits[3].where.pruning.period[0]: must be an integer, got 'forty'",
        "fits[3].where.pruning.period[1]: must be >= 1, got 0",
        "fits[3].where.pruning.layers: must be a column of single values, got 'pruning_layers' "
        "(a list or struct column)",
        "fits[4].where: must be a mapping {column: [values]} or a list of them, got []",
        "fits[5]: must be a mapping with keys name, x, y, include, where, group_by, levels, panel, "
        "got 5",
    ]


def test_duplicate_names_are_refused():
    with pytest.raises(UserError, match=r"fits\[1\].name: fit names must be unique, got 'a' twice"):
        spec_from_yaml("name: s\nfits: [{name: a}, {name: a, y: gen_gap}]\n")


def test_columns_are_the_trials_table_columns():
    columns = [n for n, _ in TRIAL_FIELDS] + [n for n, _, _ in CONFIG_FIELDS]
    assert set(SCALAR) < set(columns) and set(NUMERIC) < set(SCALAR)
    assert {"mean_stability", "gain", "hessian_topk_sum", "pruning_period"} <= set(NUMERIC)
    assert {"pruning_target", "model_name", "is_baseline"} <= set(SCALAR) - set(NUMERIC)
    assert "pruning_layers" not in SCALAR and "train_milestones" not in SCALAR


def test_a_stored_spec_yields_its_fits_and_names_itself_on_errors():
    assert fits_from_spec_text("", "s/spec.yaml") == ()
    assert fits_from_spec_text("# spec-hash: x\nname: s\n", "s/spec.yaml") == ()
    assert [f.name for f in fits_from_spec_text("name: s" + FITS, "s/spec.yaml")] == [
        "fig3",
        "fig2_vgg",
        "fig6",
    ]
    # Only `fits` is read: a field this prunetune no longer knows does not stop an aggregate.
    assert fits_from_spec_text("retired_field: 1\nfits: [{name: a}]\n", "s/spec.yaml")
    with pytest.raises(UserError, match=r"^s/spec.yaml: fits\[0\].x: unknown trials.parquet"):
        fits_from_spec_text("fits: [{name: a, x: nope}]\n", "s/spec.yaml")
