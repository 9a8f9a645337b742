"""The per-layer linear schedule reproduces the official code's counts.

The official rule is written out in ``official_noise.py`` (:func:`_official_removals` below) from
bbartoldson/GeneralizationStabilityTradeoff (commit 6d100d5), ``models.py::_prune_layer``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from official_noise import prune_layer_k

from trainables.pruning.schedule import (
    event_epochs,
    plan_schedule,
    schedule_summary,
    units_per_event,
)


def _layer(name, fraction, start, end):
    return SimpleNamespace(name=name, final_fraction=fraction, start_epoch=start, end_epoch=end)


# VGG11 (Bartoldson et al.): the last four convs, fractions .3/.3/.3/.9, starts 3..6, ends 150/275.
VGG11 = [
    _layer("conv5", 0.3, 3, 150),
    _layer("conv6", 0.3, 4, 150),
    _layer("conv7", 0.3, 5, 150),
    _layer("conv8", 0.9, 6, 275),
]


def _official_removals(n_filters: int, prune_frac: float, n_iter: int) -> list[int]:
    """The filters one layer loses at each of its ``n_iter`` events, by ``models.py::_prune_layer``:
    k from the linear rule (:func:`official_noise.prune_layer_k`), pruned only ``if k > 0``."""
    pruned, out = 0, []
    for i in range(1, n_iter + 1):
        k = max(prune_layer_k(n_filters, prune_frac, i, n_iter, pruned), 0)
        pruned += k
        out.append(k)
    return out


# Fig. 4 (config.py F4_*): 10% of every block conv, 3 events (period 30) or 2 (period 60). The
# 16-filter convs of ResNet-20/56 lose their one filter at the last event only.
@pytest.mark.parametrize(
    ("width", "removed"), [(16, 1), (32, 3), (64, 6), (128, 12), (256, 25), (512, 51)]
)
@pytest.mark.parametrize("events", [3, 2])
def test_fig4_counts_are_the_official_rule(width, removed, events):
    ours = units_per_event(width, 0.1, events)
    assert list(ours) == _official_removals(width, 0.1, events) and sum(ours) == removed
    if width == 16:
        assert list(ours) == [0] * (events - 1) + [1]


@given(n=st.integers(1, 2048), f=st.floats(0.0, 0.99), events=st.integers(1, 80))
def test_units_per_event_is_the_official_rule(n, f, events):
    assert list(units_per_event(n, f, events)) == _official_removals(n, f, events)


def test_vgg11_last_conv_period_40():
    epochs = event_epochs(6, 275, 40)
    assert epochs == (6, 46, 86, 126, 166, 206, 246)
    assert units_per_event(512, 0.9, len(epochs)) == (65, 66, 66, 65, 66, 66, 66)


def test_vgg11_thirty_percent_layers_period_40():
    removed = units_per_event(512, 0.3, len(event_epochs(3, 150, 40)))
    assert len(removed) == 4 and set(removed) <= {38, 39} and sum(removed) == 153


@pytest.mark.parametrize(
    ("period", "events", "rate"),
    [
        (4, 68, 1.32),
        (20, 14, 6.43),
        (40, 7, 12.86),
        (60, 5, 18.0),
        (100, 3, 30.0),
        (200, 2, 45.0),
        (300, 1, 90.0),
    ],
)
def test_pruning_rate_matches_figure_3(period, events, rate):
    summary = schedule_summary(VGG11, period)
    assert summary["events_per_layer"]["conv8"] == events
    assert round(summary["pruning_rate"], 2) == rate


def test_summary_counts_distinct_event_epochs():
    summary = schedule_summary(VGG11, 40)
    # conv5..7 at 3,4,5 (+40k up to 150), conv8 at 6 (+40k up to 275): disjoint epochs.
    assert summary["num_events"] == 4 + 4 + 4 + 7
    assert summary["last_event_epoch"] == 246
    assert schedule_summary([], 40)["num_events"] == 0


def test_plan_lookup_by_epoch_and_unknown_layer():
    plan = plan_schedule(VGG11, {"conv5": 512, "conv6": 512, "conv7": 512, "conv8": 512}, 40)
    assert plan.units_at(6) == {"conv8": 65}
    assert plan.units_at(7) == {}
    assert sum(sum(lp.removed) for lp in plan.layers) == 3 * 153 + 460
    with pytest.raises(KeyError, match="conv5"):  # the model rules refuse it at validation
        plan_schedule(VGG11, {"conv8": 512}, 40)


def test_bad_period_names_the_field():
    with pytest.raises(ValueError, match=r"pruning.period: must be >= 1, got 0"):
        event_epochs(0, 10, 0)


@given(
    n=st.integers(1, 2000),
    f=st.floats(0.0, 1.0, allow_nan=False),
    events=st.integers(1, 80),
)
def test_linear_rule_properties(n, f, events):
    removed = units_per_event(n, f, events)
    assert len(removed) == events and min(removed) >= 0
    # The last event reaches exactly N - ceil((1 - f) N): within one unit of f * N (float rounding
    # in (1 - f) N can make it exactly one unit: n 39, f 1/3 keeps ceil(26.000000000000004) = 27).
    assert sum(removed) == n - math.ceil((1 - f) * n)
    assert f * n - 1 - 1e-9 * n <= sum(removed) <= f * n + 1e-9 * n
    # Linear: per-event removals differ by at most one unit.
    assert max(removed) - min(removed) <= 1


def test_schedule_module_does_not_import_torch():
    code = "import sys, trainables.pruning.schedule; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
