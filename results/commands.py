"""The ``aggregate`` and ``report`` subcommands of the ``prunetune`` CLI."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from results.tables import storage
from trainables.errors import UserError

if TYPE_CHECKING:
    from results.api import ExportSummary

MAX_IDS = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``aggregate STUDY_DIR`` and ``report STUDY_DIR [-o FILE]``."""
    agg = subparsers.add_parser(
        "aggregate",
        help="export a study's trials/epochs/events/layer_events/fits Parquet tables and print a "
        "summary",
        description="Read the study's Ray Tune experiments (also while it runs) and write "
        "trials.parquet, epochs.parquet, events.parquet, layer_events.parquet and fits.parquet "
        "into it.",
    )
    agg.add_argument("study_dir", metavar="STUDY_DIR", help="study directory (path or URI)")
    agg.set_defaults(func=run_aggregate)
    rep = subparsers.add_parser(
        "report",
        help="export the study, then write a self-contained HTML report",
        description="Export the study's tables, then render report.html (plotly.js embedded; "
        "opens offline).",
    )
    rep.add_argument("study_dir", metavar="STUDY_DIR", help="study directory (path or URI)")
    rep.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="where to write (default: STUDY_DIR/report.html)",
    )
    rep.set_defaults(func=run_report)


# results.api and results.report.html are imported where they are used: they load scipy (~1 s),
# which `prunetune --version`, `presets` and every other command would otherwise pay when the
# parser is built.


def run_aggregate(args: argparse.Namespace) -> int:
    from results.api import export_study

    storage.open_location(args.study_dir)  # a storage that does not answer: one line, in time
    summary = export_study(args.study_dir)
    print("\n".join(summary_lines(summary)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from results.api import export_study, write_report

    storage.open_location(args.study_dir)
    if args.output is not None:
        check_output(args.output)
    summary = export_study(args.study_dir)
    print("\n".join(summary_lines(summary)))
    print(f"report: {write_report(args.study_dir, args.output)}")
    return 0


def check_output(out: str) -> None:
    """``report -o``: a local target must be a file whose directory exists (checked before the
    export, so that a typo costs nothing); a URI is checked by the write itself."""
    if storage.is_uri(out):
        storage.resolve(out)
        return
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.isdir(path):
        raise UserError(
            f"report -o: {out} is a directory; give a file name, e.g. {out}/report.html"
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise UserError(f"report -o: directory {parent} does not exist; create it first")


def summary_lines(s: ExportSummary) -> list[str]:
    """The short human summary ``aggregate`` prints."""
    counts = ", ".join(f"{n} {status}" for status, n in s.by_status.items() if n) or "none"
    lines = [
        f"study {s.name} (spec {s.spec_hash or '?'}): {s.n_trials} trials in "
        f"{len(s.experiments)} experiment(s) [{', '.join(s.experiments)}]",
        f"  status: {counts}",
    ]
    if s.n_duplicates:
        lines.append(f"  {s.n_duplicates} duplicate Tune trial(s) of the same config merged")
    for name, why in s.unreadable:
        lines.append(f"  experiment {name}: not readable yet ({why})")
    not_created = max(0, (s.n_planned or 0) - s.n_trials)  # planned, not yet in Tune's state
    if s.incomplete or not_created:
        shown = ", ".join(s.incomplete[:MAX_IDS]) + (" ..." if len(s.incomplete) > MAX_IDS else "")
        total = len(s.incomplete) + not_created
        parts = [f"{len(s.incomplete)} in Tune's state"] + (
            [f"{not_created} not started yet"] if not_created else []
        )
        lines.append(
            f"  incomplete: {total} trial(s) still to finish ({', '.join(parts)})"
            + (f": {shown}" if shown else "")
        )
    row = s.pooled
    if row is None or row["n"] is None:
        lines.append("  pooled fit gain ~ mean_instability: no pruned trial yet")
    else:
        lines.append(
            f"  pooled fit gain ~ mean_instability (trial level, n={row['n']}): "
            f"r={_ci(row, 'pearson_r', 'pearson')}, tau={_ci(row, 'kendall_tau', 'kendall')}, "
            f"rho={_ci(row, 'spearman_rho', 'spearman')}"
        )
        excluded = ", ".join(f"{k} {v}" for k, v in row["excluded"]) or "none"
        lines.append(f"  excluded from it: {excluded}")
    lines.append(
        f"  wrote trials ({s.n_trials}), epochs ({s.n_epochs}), events ({s.n_events}), "
        f"fits ({s.n_fits}) Parquet files"
    )
    return lines


def _ci(row: dict, stat: str, method: str) -> str:
    from results.report.html import num, pval

    return (
        f"{num(row[stat])} [{num(row[f'{method}_ci_low'])}, {num(row[f'{method}_ci_high'])}] "
        f"p={pval(row[f'{method}_p'])}"
    )
