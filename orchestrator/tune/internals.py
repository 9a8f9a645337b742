"""Every use of Ray Tune's private internals, in one place (checked against Ray 2.60.0).

The Optuna mirror needs the Repeater's per-seed config key (:data:`TRIAL_INDEX`). The checkpoint janitor (:mod:`orchestrator.tune.janitor`) needs two things Tune exposes no public API
for: which checkpoint a trial would be restored from (its checkpoint manager's latest registered
checkpoint, pickled into the snapshot's run metadata), and dropping checkpoints from a live
trial's manager. If a Ray upgrade changes these shapes, :func:`latest_checkpoint_name` fails
loudly (tests cover it) and :func:`forget_checkpoints_before` degrades to a no-op (only the
snapshot size suffers).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

CHECKED_RAY_VERSION = "2.60.0"
# The config key the Repeater gives each seed of a suggestion (0, 1, ...): Ray Tune's
# ``ray.tune.search.repeater.TRIAL_INDEX``, spelt here so the Optuna mirror needs no Ray (a test
# pins it to Tune's).
TRIAL_INDEX = "__trial_index__"
_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")


def checkpoint_index(name: str | None) -> int | None:
    """``checkpoint_000007`` -> 7 (None for anything else)."""
    match = _CHECKPOINT_RE.match(name or "")
    return int(match.group(1)) if match else None


def latest_checkpoint_name(metadata_json: str) -> str | None:
    """The directory name of the checkpoint Tune restores this trial from (None if none).

    That is the checkpoint manager's latest registered checkpoint, which can lag the last
    result's ``checkpoint_dir_name`` (Tune updates the result before it registers the save).
    """
    from ray.tune.utils.serialization import _loads_with_cloudpickle  # trusted: our own study

    meta = _loads_with_cloudpickle(metadata_json)
    latest = getattr(meta.get("checkpoint_manager"), "latest_checkpoint_result", None)
    if latest is None or latest.checkpoint is None:
        return None
    return posixpath.basename(latest.checkpoint.path.rstrip("/"))


def latest_checkpoint_index(trial: Any) -> int | None:
    """The checkpoint index a live Tune trial would restore from (None if none)."""
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    latest = getattr(manager, "latest_checkpoint_result", None)
    if latest is None or latest.checkpoint is None:
        return None
    return _result_index(latest)


def forget_checkpoints_before(trial: Any, keep_from: int) -> int:
    """Drop checkpoints older than index `keep_from` from a live Tune trial's checkpoint manager
    (they are deleted, or about to be); returns how many were dropped."""
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if not isinstance(results, list):
        return 0
    kept = [r for r in results if (_result_index(r) or 0) >= keep_from]
    if len(kept) != len(results):
        manager._checkpoint_results = kept
        trial.run_metadata.invalidate_cache()
    return len(results) - len(kept)


def _result_index(result: Any) -> int | None:
    return checkpoint_index(posixpath.basename(result.checkpoint.path.rstrip("/")))
