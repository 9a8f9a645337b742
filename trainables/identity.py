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
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.config import TrialConfig

_DEFAULT_SEED = TrialConfig().seed


def content_hash(data: Any) -> str:
    """SHA-256 hex of the canonical JSON of plain data."""
    return hashlib.sha256(_json(data).encode()).hexdigest()


def canonical_dict(obj: Any) -> dict[str, Any]:
    """Plain data of a config dataclass without its default-valued fields (recursively)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            sub = _canonical_section(value) if _hashable(value) else canonical_dict(value)
            if sub:
                out[f.name] = sub
        elif f.default is dataclasses.MISSING or value != f.default:
            out[f.name] = _plain(value)
    return out


@functools.lru_cache(maxsize=65536)
def _canonical_section(section: Any) -> dict[str, Any]:
    """canonical_dict of a (frozen, hashable) config section, memoised: the trials of a study
    share few distinct sections, and expanding 100,000 trials computes their keys. The dict is
    shared between callers: read it, never change it."""
    return canonical_dict(section)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _without(cfg: TrialConfig, *keys: str) -> dict[str, Any]:
    d = canonical_dict(cfg)  # a new dict: popping from it changes no memoised section
    for key in keys:
        d.pop(key, None)
    return d


# --- keys of many configs -------------------------------------------------------------------------
# Expanding a large study computes three keys for each of up to 100,000 configs that share few
# distinct section objects and differ mostly by seed. The canonical JSON of a dict with sorted keys
# is ``{"k1":v1,"k2":v2}``: the JSON text of each top-level value (without the seed) is made once
# per distinct set of section objects, and each key hashes the joined pieces; the text, and so the
# key, equals ``content_hash`` of the whole dict (tests pin the golden keys).


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(pieces: Mapping[str, str]) -> str:
    text = "{" + ",".join(f'"{k}":{pieces[k]}' for k in sorted(pieces)) + "}"  # names: [a-z_]
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_PIECES: dict[tuple, tuple[tuple, dict[str, str], str, str]] = {}
_MAX_PIECES = 50_000
_UNSEEDED = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name != "seed")


def _pieces(cfg: TrialConfig) -> tuple[dict[str, str], str, str]:
    """(JSON text per top-level field without the seed, config key, baseline key), memoised by
    the identity of the config's section objects (held by the memo, so ids stay unique)."""
    objects = tuple(getattr(cfg, name) for name in _UNSEEDED)
    memo_key = tuple(map(id, objects))
    hit = _PIECES.get(memo_key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objects, strict=True)):
        return hit[1], hit[2], hit[3]
    pieces = {k: _json(v) for k, v in _without(cfg, "seed").items()}
    base = {k: v for k, v in pieces.items() if k != "pruning"}
    if len(_PIECES) >= _MAX_PIECES:
        _PIECES.clear()
    _PIECES[memo_key] = (objects, pieces, _digest(pieces), _digest(base))
    return pieces, _PIECES[memo_key][2], _PIECES[memo_key][3]


def trial_key(cfg: TrialConfig) -> str:
    """12 hex chars naming the trial (module docstring)."""
    pieces, _, _ = _pieces(cfg)
    if cfg.seed == _DEFAULT_SEED:
        return _digest(pieces)
    return _digest({**pieces, "seed": _json(cfg.seed)})


def config_key(cfg: TrialConfig) -> str:
    """12 hex chars naming the configuration without its seed."""
    return _pieces(cfg)[1]


def baseline_key(cfg: TrialConfig) -> str:
    """12 hex chars shared by a trial and its matched baselines."""
    return _pieces(cfg)[2]


@dataclass(frozen=True)
class Identity:
    """A resolved trial's config (also as plain data) and its three keys."""

    cfg: TrialConfig
    plain: dict[str, Any]  # cfg.to_dict()
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
        self._memo: dict[str, tuple[TrialConfig, dict, str, str]] = {}

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
            self._memo[memo_key] = (cfg, cfg.to_dict(), config_key(cfg), baseline_key(cfg))
        cfg, plain, ckey, bkey = self._memo[memo_key]
        cfg = dataclasses.replace(cfg, seed=seed)  # the same section objects: _pieces is memoised
        return Identity(cfg, plain | {"seed": seed}, trial_key(cfg), ckey, bkey)
