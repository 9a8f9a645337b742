"""Identity from content: the hashes that name trials, configurations and baseline groups.

- ``trial_key``: 12 hex chars of the SHA-256 of the trial's canonical config (seed included).
  The column ``trial_key``; Ray Tune's own id is the column ``trial_id``.
- ``config_key``: the same without the seed: trials that differ only by seed (seed averaging).
- ``baseline_key``: the same without the seed and the pruning fields: equal keys are matched
  baselines.

The canonical config drops every field whose value equals its default, as open_lth's ``desc.py``
does, so a field added later with a default never renames old trials (golden ids pin this).
:class:`KeyCache` computes the keys of many configs that share a config-without-seed quickly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.config import TrialConfig

_DEFAULT_SEED = TrialConfig().seed


def content_hash(data: Any) -> str:
    """SHA-256 hex of the canonical JSON of plain data."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_dict(obj: Any) -> dict[str, Any]:
    """Plain data of a config dataclass without its default-valued fields (recursively)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            sub = canonical_dict(value)
            if sub:
                out[f.name] = sub
        elif f.default is dataclasses.MISSING or value != f.default:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _seeded_key(without_seed: Mapping[str, Any], seed: int) -> str:
    extra = {} if seed == _DEFAULT_SEED else {"seed": seed}
    return content_hash(dict(without_seed) | extra)[:12]


def _without(cfg: TrialConfig, *keys: str) -> dict[str, Any]:
    d = canonical_dict(cfg)
    for key in keys:
        d.pop(key, None)
    return d


def trial_key(cfg: TrialConfig) -> str:
    """12 hex chars naming the trial (module docstring)."""
    return _seeded_key(_without(cfg, "seed"), cfg.seed)


def config_key(cfg: TrialConfig) -> str:
    """12 hex chars naming the configuration without its seed."""
    return content_hash(_without(cfg, "seed"))[:12]


def baseline_key(cfg: TrialConfig) -> str:
    """12 hex chars shared by a trial and its matched baselines."""
    return content_hash(_without(cfg, "seed", "pruning"))[:12]


@dataclass(frozen=True)
class Identity:
    """A resolved trial's config and its three keys."""

    cfg: TrialConfig
    trial_key: str
    config_key: str
    baseline_key: str


def trial_config(tune_config: Mapping[str, Any]) -> TrialConfig:
    """The TrialConfig of a Tune config ``{"trial": {...}, ...}``; with Tune's Repeater
    (``seeds`` and ``__trial_index__``) the seed is ``seeds[__trial_index__]``."""
    return KeyCache().resolve(tune_config).cfg


class KeyCache:
    """Resolves Tune configs to :class:`Identity`, parsing each config-without-seed once
    (10,000 trials share few configs; only the seed differs between them)."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[TrialConfig, dict[str, Any], str, str]] = {}

    def resolve(self, tune_config: Mapping[str, Any]) -> Identity:
        trial = dict(tune_config["trial"])
        seed = trial.pop("seed", _DEFAULT_SEED)
        seeds = tune_config.get("seeds")
        if seeds:
            index = tune_config.get("__trial_index__")
            if not isinstance(index, int) or not 0 <= index < len(seeds):
                raise ValueError(
                    f"__trial_index__: must index seeds (len {len(seeds)}), got {index!r}"
                )
            seed = seeds[index]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an integer, got {seed!r}")
        memo_key = json.dumps(trial)  # Tune keeps key order: equal configs give equal keys
        if memo_key not in self._memo:
            cfg = TrialConfig.from_dict(trial | {"seed": seed})
            without_seed = _without(cfg, "seed")
            self._memo[memo_key] = (cfg, without_seed, config_key(cfg), baseline_key(cfg))
        cfg, without_seed, ckey, bkey = self._memo[memo_key]
        cfg = dataclasses.replace(cfg, seed=seed)
        return Identity(cfg, _seeded_key(without_seed, seed), ckey, bkey)
