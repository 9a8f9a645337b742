"""`prunetune run SPEC --dry-run`: what running the spec would do, with nothing started or written.

The plan states: the study directory and spec hash; whether the run would start a new study,
resume one, or find it complete with nothing to run, or be refused (storage unusable, another
spec hash there, a driver running it, a dataset its trials could not load, trials that fit no
node: every reason, one line each); the trials, epochs and resources; the compute and wall time on the cluster it
would use (``--address``: that cluster's nodes, read by joining it; else this machine, as the local
Ray would see it); and per fit level the smallest correlation the planned pruned trials can
detect (two-sided test, alpha 0.05, power 0.8; ``results.fits.stats.min_detectable_r``), so one sees
before spending the compute whether the study can answer its question.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from search_spaces.expand import StudyPlan
from search_spaces.spec import StudySpec
from trainables.errors import UserError


def plan_report(spec: StudySpec, plan: StudyPlan, address: str | None) -> dict[str, Any]:
    """The dry-run plan as plain JSON data (see the module docstring)."""
    from orchestrator.cluster.runtime import slots
    from orchestrator.study.directory import study_uri
    from search_spaces.summary import plan_summary, wall_estimate

    nodes, where = _nodes(address)
    action, reasons = _action(spec, plan, nodes)
    fit = slots(nodes, plan.resources.cpu, plan.resources.gpu)
    wall: dict[str, Any] = {"cluster": where, "seconds": None, "concurrency": 0}
    if fit > 0:
        wall = {
            **wall_estimate(plan, min(fit, plan.max_concurrent_trials or fit)),
            "cluster": where,
        }
    return {
        "study": study_uri(spec.storage, spec.name),
        "spec_hash": spec.hash,
        "action": action,  # start | resume | complete | refused
        "reason": "; ".join(reasons) or None,
        "reasons": reasons,
        **plan_summary(plan),
        "wall": wall,
        "disk": _disk(study_uri(spec.storage, spec.name), plan, wall["concurrency"]),
        "detectable_r": detectable_r(plan),
    }


def _disk(uri: str, plan: StudyPlan, concurrency: int) -> dict[str, Any]:
    """The disk estimate (:mod:`orchestrator.cli.disk_estimate`) and the storage's free space; a
    warning when that is less than the peak (a warning only: the estimate is a guide)."""
    from orchestrator.cli.disk_estimate import disk_estimate, free_bytes

    disk = disk_estimate(plan, concurrency or plan.max_concurrent_trials or 1)
    free = free_bytes(uri)
    disk["free_mb"] = None if free is None else round(free / 1e6, 1)
    disk["warning"] = None
    if free is not None and free < disk["peak_mb"] * 1e6:
        disk["warning"] = (
            f"the storage's filesystem has {_size(free / 1e6)} free, less than the "
            f"{_size(disk['peak_mb'])} the study needs at its peak: free space or choose --storage"
        )
    return disk


def _nodes(address: str | None) -> tuple[list[dict[str, float]], str]:
    from orchestrator.cluster import runtime

    if address is None:
        nodes = runtime.local_nodes()
        return nodes, f"this machine ({nodes[0]['CPU']:g} CPU, {nodes[0]['GPU']:g} GPU)"
    runtime.check_address(address)
    with runtime.ray_session(address):
        nodes = runtime.alive_nodes()
    return nodes, f"{address} ({len(nodes)} nodes)"


def _action(spec: StudySpec, plan: StudyPlan, nodes: list) -> tuple[str, list[str]]:
    """start | resume | complete | refused, with every reason it would be refused (each check
    runs, so one dry run shows all that must be fixed)."""
    from orchestrator.cluster.runtime import capacity_refusal
    from orchestrator.study.directory import locate
    from search_spaces.smoke import check_data

    reasons, target = [], None
    for check in (lambda: locate(spec), lambda: check_data(spec)):  # locate also refuses a
        try:  # study that another driver runs now
            found = check()
        except UserError as exc:
            reasons.append(str(exc))
        else:
            target = found if target is None else target
    refusal = capacity_refusal(nodes, plan.resources.cpu, plan.resources.gpu)
    if refusal:
        reasons.append(refusal)
    if reasons:
        return "refused", reasons
    if target is not None and target.exists:
        return ("complete" if _is_complete(target, plan) else "resume"), []
    return "start", []


def _is_complete(target: Any, plan: StudyPlan) -> bool:
    """Whether every experiment of the existing study finished every trial (nothing to run)."""
    from orchestrator.study.directory import open_existing
    from orchestrator.study.status import is_complete

    study = open_existing(target.uri)
    return all(is_complete(study, plan, e) for e in study.experiments)


def detectable_r(plan: StudyPlan) -> list[dict[str, Any]]:
    """Per fit level (and per pruning target at trial level): the points a fit will have and
    the smallest |r| it detects. Optuna trials count at trial level (their configs are unknown
    ahead)."""
    from results.fits.stats import min_detectable_r
    from trainables.identity import config_key

    pruned = plan.pruned
    optuna = plan.optuna.num_trials if plan.optuna else 0
    rows = [
        ("trial", "all", len(pruned) + optuna),
        ("config", "all", len({config_key(t) for t in pruned})),
    ]
    targets = Counter(t.pruning.target for t in pruned)
    if len(targets) > 1:
        rows += [("trial", f"target={k}", n) for k, n in sorted(targets.items())]
    out = []
    for level, group, n in rows:
        r = min_detectable_r(n)
        out.append(
            {"level": level, "group": group, "n": n, "min_r": None if r != r else round(r, 3)}
        )
    return out


def print_plan(spec: StudySpec, plan: StudyPlan, address: str | None, as_json: bool) -> None:
    report = plan_report(spec, plan, address)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for line in plan_lines(report):
        print(line)


def plan_lines(p: dict[str, Any]) -> list[str]:
    t, est, res = p["trials"], p["estimate"], p["resources_per_trial"]
    what = {
        "start": "would start a new study",
        "resume": "would resume the existing study",
        "complete": "the study is complete; nothing would run",
        "refused": "would be refused",
    }
    lines = [
        f"study {p['study']} (spec {p['spec_hash']}): {what[p['action']]}; dry run, nothing written",
        *(f"  refused: {reason}" for reason in p["reasons"]),
        f"  trials: {t['total']} ({t['pruned']} pruned, {t['baselines']} baselines"
        + (f", {t['optuna']} Optuna" if t["optuna"] else "")
        + f"), {p['epochs']} epochs",
        f"  per trial: {res['cpu']:g} CPU, {res['gpu']:g} GPU",
        f"  compute: {_hours(est['gpu_hours'])} GPU-hours (one A100 per trial), "
        f"{_hours(est['cpu_hours'])} CPU-thread-hours",
    ]
    w = p["wall"]
    if w["concurrency"] == 0:
        lines.append(f"  wall time on {w['cluster']}: none, no node of it holds a trial")
    elif p["action"] == "complete":
        lines.append(f"  wall time on {w['cluster']}: none, every trial has finished")
    else:
        lines.append(
            f"  wall time on {w['cluster']}: {_duration(w['seconds'])} with {w['concurrency']} "
            f"trials at once ({w['device']} estimate + Ray start, per-trial and export overheads)"
        )
    d = p["disk"]
    lines.append(
        f"  disk: {_size(d['peak_mb'])} at the peak ({d['running_trials']} running trials' "
        f"checkpoints of up to {_size(d['checkpoint_mb'])}), {_size(d['final_mb'])} at the end"
        + ("" if d["free_mb"] is None else f"; {_size(d['free_mb'])} free")
    )
    if d["warning"]:
        lines.append(f"  warning: {d['warning']}")
    for r in p["detectable_r"]:
        min_r = "undefined (n <= 3)" if r["min_r"] is None else f"|r| >= {r['min_r']:.2f}"
        lines.append(f"  detectable at {r['level']} level, {r['group']}: n = {r['n']}, {min_r}")
    return lines


def _size(mb: float) -> str:
    if mb < 1:
        return f"{mb * 1000:.0f} kB"
    if mb < 1000:
        return f"{mb:.3g} MB"
    return f"{mb / 1000:.3g} GB"


def _hours(h: float | None) -> str:
    return "unknown" if h is None else f"{h:.3g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no estimate for this model on this device)"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
