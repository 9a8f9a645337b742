"""The columns of ``trials.parquet``, typed once with the record's type tags (stdlib only).

One row per trial: its identity and outcome columns (:data:`TRIAL_COLUMNS`), then the flattened
:class:`trainables.config.TrialConfig` (:data:`CONFIG_COLUMNS`). ``results.tables.schema`` maps the tags
to Arrow types to write the table; the spec's ``fits`` (``search_spaces.fits``) checks a fit's
column names and kinds against the same list. Defining them here, beside the record they
summarise, keeps the flow one-way: search_spaces never imports results (nor pyarrow).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from trainables.config import TrialConfig
from trainables.records import BOOL, FLATNESS_KEYS, FLOAT, INT, RECORD, STR, Type, list_of

# Identity and outcome columns first (meanings: results/README.md).
TRIAL_COLUMNS: tuple[tuple[str, Type], ...] = (
    ("trial_id", STR),  # Ray Tune's trial id
    ("trial_key", STR),  # content hash of the resolved TrialConfig (trainables.identity)
    ("config_key", STR),  # content hash of the config without its seed
    ("baseline_key", STR),
    ("experiment", STR),
    ("status", STR),  # results.tables.status.STATUSES
    ("tune_status", STR),
    ("error", STR),
    ("num_failures", INT),
    ("is_baseline", BOOL),
    ("n_epochs", INT),
    ("n_events", INT),
    ("last_event_epoch", INT),
    ("final_sparsity", FLOAT),
    ("mean_instability", FLOAT),
    ("mean_stability", FLOAT),
    ("generalization", FLOAT),
    ("generalization_epoch", INT),
    ("test_acc_final", FLOAT),
    ("gen_gap", FLOAT),
    ("gain", FLOAT),
    ("n_baselines", INT),
    ("train_acc_final", FLOAT),
    ("train_acc_noisy_final", FLOAT),
    ("train_acc_clean_final", FLOAT),
    ("control_train_acc", FLOAT),
    *((k, FLOAT) for k in FLATNESS_KEYS),
    ("tic", FLOAT),  # grad_noise_trace / hessian_topk_sum (Bartoldson et al.'s Fig. E5)
    ("runtime_s", FLOAT),
    ("node_ip", STR),
    ("hostname", STR),
    # The per-trial record keys, each the last value the trial reported (results.tables.summarize).
    *((f.name, f.type) for f in RECORD if f.per_trial),
)

_RENAMED = {"generalization": "generalization_measure"}


def _config_tag(tp: Any) -> Type:
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return (
            "struct",
            tuple((f.name, _config_tag(hints[f.name])) for f in dataclasses.fields(tp)),
        )
    if typing.get_origin(tp) is tuple:
        return list_of(_config_tag(typing.get_args(tp)[0]))
    if typing.get_origin(tp) is Literal or tp is str:
        return STR
    return {bool: BOOL, int: INT, float: FLOAT}[tp]


def config_columns(
    cls: type = TrialConfig, prefix: str = ""
) -> list[tuple[str, tuple[str, ...], Type]]:
    """The flattened config columns: (column name, path in ``to_dict()``, type tag), in order.

    Nested fields are joined with ``_`` (``pruning.target`` -> ``pruning_target``), tuples become
    list columns, and the top-level ``generalization`` (the measure's *name*) becomes
    ``generalization_measure`` because ``generalization`` holds the measured value.
    """
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += [(n, (f.name, *p), t) for n, p, t in config_columns(tp, f"{prefix}{f.name}_")]
        else:
            name = _RENAMED.get(f.name, f.name) if not prefix else f"{prefix}{f.name}"
            out.append((name, (f.name,), _config_tag(tp)))
    return out


CONFIG_COLUMNS = config_columns()
# Every trials.parquet column -> its type tag, in table order.
COLUMN_TAGS: dict[str, Type] = {
    **dict(TRIAL_COLUMNS),
    **{name: tag for name, _, tag in CONFIG_COLUMNS},
}
