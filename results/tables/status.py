"""A trial's status: one vocabulary and one rule, for export, the report, `prunetune status` and
the progress line.

``ok`` (finished: its last record says done), ``diverged`` (NaN loss: recorded, not retried),
``error`` (Tune gave up on it), ``stopped`` (Tune ended it after it reported, without a final
record: a stop criterion, a scheduler, or Ctrl-C), ``running`` (reported, not finished: a live
or interrupted study; a resume continues it), ``pending`` (never reported; a resume runs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

STATUSES: tuple[str, ...] = ("ok", "diverged", "error", "stopped", "running", "pending")
FINISHED: tuple[str, ...] = ("ok", "diverged")
INCOMPLETE: tuple[str, ...] = ("stopped", "running", "pending")


def trial_status(tune_status: str, last_record_status: str | None, reported: bool) -> str:
    """The status of a trial from Tune's status (PENDING | RUNNING | PAUSED | TERMINATED |
    ERROR), the ``status`` of its last record, and whether it has reported at all."""
    if tune_status == "ERROR":
        return "error"
    if last_record_status == "done":
        return "ok"
    if last_record_status == "diverged":
        return "diverged"
    if not reported:
        return "pending"
    return "stopped" if tune_status == "TERMINATED" else "running"


def count_statuses(statuses: Iterable[str], expected: int | None = None) -> dict[str, int]:
    """Trials per status (every status present, zeros included); trials a searcher has not
    created yet (``expected`` minus those seen) count as pending."""
    counts = dict.fromkeys(STATUSES, 0)
    n = 0
    for status in statuses:
        counts[status] += 1
        n += 1
    if expected is not None:
        counts["pending"] += max(0, expected - n)
    return counts


def format_counts(counts: dict[str, int], expected: int) -> str:
    """``60/72 finished: 58 ok, 2 diverged; 2 running, 0 error, 10 pending`` (stopped when any)."""
    finished = counts["ok"] + counts["diverged"]
    return f"{finished}/{expected} finished: {_breakdown(counts)}"


def running_banner(counts: dict[str, int], expected: int, taken: datetime) -> str:
    """The live report's banner: ``Study running: snapshot of 2025-06-01 12:00:00 UTC, 14/72
    trials finished (12 ok, 2 diverged; 2 running, 0 error, 56 pending)``.

    `taken`: when the study's state was read (an aware datetime; shown in UTC).
    """
    finished = counts["ok"] + counts["diverged"]
    when = taken.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"Study running: snapshot of {when}, {finished}/{expected} trials finished "
        f"({_breakdown(counts)})"
    )


def _breakdown(counts: dict[str, int]) -> str:
    """The counts in words; ``interrupted`` (running when the driver stopped, no driver now: a
    resume continues them) replaces ``running`` where a caller counted it."""
    stopped = f", {counts['stopped']} stopped" if counts.get("stopped") else ""
    running = f"{counts['running']} running"
    if counts.get("interrupted"):
        running = f"{counts['interrupted']} interrupted"
    return (
        f"{counts['ok']} ok, {counts['diverged']} diverged; "
        f"{running}, {counts['error']} error{stopped}, "
        f"{counts['pending']} pending"
    )
