"""The report's HTML pieces: page frame, fits table, per-configuration table, study facts,
environment.

Every string from the study (names, spec, configs, trial ids, error reasons) is escaped here.
"""

from __future__ import annotations

import html
import math

from results.report.data import MAX_CONFIG_ROWS, MAX_LISTED, ReportData
from search_spaces.fits import DEFAULT_FIT

esc = html.escape

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:32px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f5f5f5}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:8px;overflow:auto;
font-size:12px;max-height:420px}.muted{color:#777;font-size:13px}details{margin:8px 0}
.running{background:#fff4d6;border:1px solid #e6c15a;padding:8px 12px;margin:0 0 12px}
"""


def page(title: str, plotly_js: str, body: str) -> str:
    """The full document; `title` must already be escaped."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title} · prunetune report</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head>\n<body>\n{body}\n</body></html>\n'
    )


def running_section(banner: str) -> str:
    """The live report's banner (:func:`results.tables.status.running_banner`), escaped."""
    return f'<p class="running" role="status">{esc(banner)}</p>'


def num(v: float | None, digits: int = 3) -> str:
    """A number for display; an em dash when undefined."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if abs(v) < 1e-12:  # float noise around an exact zero (a baseline's own gain)
        return "0"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def pval(p: float | None) -> str:
    """A p-value; one that underflowed to 0 in double precision reads '<1e-300'."""
    return "<1e-300" if p == 0 else num(p, 2)


def _ci(row: dict, method: str, stat: str) -> str:
    return f"{num(row[stat])} [{num(row[f'{method}_ci_low'])}, {num(row[f'{method}_ci_high'])}]"


def fit_text(row: dict | None, sep: str = " · ") -> str:
    """'n=30 · r=0.52 [0.31, 0.68] · τ=... · ρ=...' of a fits row."""
    if row is None or row.get("n") is None:
        return "no fit"
    return sep.join(
        [
            f"n={row['n']}",
            f"r={_ci(row, 'pearson', 'pearson_r')}",
            f"τ={_ci(row, 'kendall', 'kendall_tau')}",
            f"ρ={_ci(row, 'spearman', 'spearman_rho')}",
        ]
    )


def slope_text(row: dict | None) -> str:
    return "—" if row is None else _ci(row, "slope", "slope")


def _partial(row: dict, control: str) -> str:
    r = row[f"partial_r_{control}"]
    if r is None:
        return "—"
    return (
        f"{num(r)} [{num(row[f'partial_ci_low_{control}'])}, {num(row[f'partial_ci_high_{control}'])}]"
        f" p={esc(pval(row[f'partial_p_{control}']))}"
    )


def _fit_cells(row: dict) -> str:
    excluded = ", ".join(f"{esc(k)}: {v}" for k, v in row["excluded"]) or "none"
    cells = [
        str(row["n"]),
        f"{_ci(row, 'pearson', 'pearson_r')} p={esc(pval(row['pearson_p']))}",
        f"{_ci(row, 'kendall', 'kendall_tau')} p={esc(pval(row['kendall_p']))}",
        f"{_ci(row, 'spearman', 'spearman_rho')} p={esc(pval(row['spearman_p']))}",
        _ci(row, "slope", "slope"),
        _partial(row, "sparsity"),
        _partial(row, "train_acc"),
    ]
    return "".join(f"<td>{c}</td>" for c in cells) + f'<td class="l">{excluded}</td>'


_FIT_HEAD = (
    "<th>n</th><th>Pearson r [95% CI]</th><th>Kendall τ [CI]</th><th>Spearman ρ [CI]</th>"
    "<th>OLS slope [CI]</th><th>partial r | final sparsity</th><th>partial r | final train acc</th>"
    '<th class="l">excluded trials</th>'
)


def fits_section(data: ReportData) -> str:
    """Pooled default fits (both levels) up front; every default row, per group, behind a
    <details>; then the spec's own fits, each row saying which trials it fitted."""
    default = [r for r in data.fit_rows if r["fit"] == DEFAULT_FIT]
    pooled = [r for r in default if r["grouping"] == "all"]
    head = f'<tr><th class="l">y ~ x</th><th class="l">level</th>{_FIT_HEAD}</tr>'
    rows = "".join(f"<tr>{_pair_cells(r)}{_fit_cells(r)}</tr>" for r in pooled)
    every = "".join(f"<tr>{_pair_cells(r)}{_group_cell(r)}{_fit_cells(r)}</tr>" for r in default)
    return (
        "<section><h2>Correlation fits (pruned trials)</h2>"
        '<p class="muted">Trial level: one point per trial; config level: seeds averaged first. '
        "CIs: Fisher z for r, percentile bootstrap (fixed seed) for τ and ρ, t for the slope. "
        "Partial r controls for final sparsity and for final training accuracy (on the relabelled "
        "subset under label noise): a gain that only tracks a smaller model or less memorisation "
        "shrinks there.</p>"
        f"<table>{head}{rows}</table>"
        f"<details><summary>all {len(default)} default fits, per group</summary><table>"
        f'<tr><th class="l">y ~ x</th><th class="l">level</th><th class="l">group</th>{_FIT_HEAD}</tr>'
        f"{every}</table></details>{_spec_fits(data.fit_rows)}</section>"
    )


def _pair_cells(r: dict) -> str:
    return f'<td class="l">{esc(r["y"])} ~ {esc(r["x"])}</td><td class="l">{esc(r["level"])}</td>'


def _group_cell(r: dict) -> str:
    return f'<td class="l">{esc(r["grouping"])}={esc(str(r["group"]))}</td>'


def _where_text(where: list) -> str:
    """'pruning_target in {smallest}, pruning_period in {4, 40} or ...' ('all' when empty)."""
    clauses = [
        ", ".join(f"{k} in {{{', '.join(v)}}}" for k, v in clause) or "all" for clause in where
    ]
    return " or ".join(clauses) or "all"


def _spec_fits(fit_rows: tuple[dict, ...]) -> str:
    named = [r for r in fit_rows if r["fit"] != DEFAULT_FIT]
    if not named:
        return ""
    rows = "".join(
        f'<tr><td class="l">{esc(r["fit"])}</td>{_pair_cells(r)}{_group_cell(r)}'
        f'<td class="l">{esc(", ".join(r["include"]))}; {esc(_where_text(r["where"]))}</td>'
        f"{_fit_cells(r)}</tr>"
        for r in named
    )
    return (
        "<h3>Figure fits (the spec's <code>fits</code>; <code>default.*</code>: the default fit "
        "of a figure panel no spec fit draws)</h3>"
        '<table><tr><th class="l">fit</th><th class="l">y ~ x</th><th class="l">level</th>'
        f'<th class="l">group</th><th class="l">trials</th>{_FIT_HEAD}</tr>{rows}</table>'
    )


def config_section(data: ReportData) -> str:
    head = (
        '<tr><th class="l">configuration</th><th>n (ok)</th><th>gain mean ± sd</th>'
        "<th>instability mean ± sd</th><th>generalization mean</th></tr>"
    )
    rows = "".join(
        f'<tr><td class="l">{esc(r.label)}</td><td>{r.n}</td>'
        f"<td>{num(r.gain_mean)} ± {num(r.gain_sd)}</td>"
        f"<td>{num(r.instability_mean)} ± {num(r.instability_sd)}</td>"
        f"<td>{num(r.generalization_mean)}</td></tr>"
        for r in data.config_rows
    )
    more = ""
    if data.n_configs > len(data.config_rows):
        more = (
            f'<p class="muted">First {MAX_CONFIG_ROWS} of {data.n_configs} configurations; '
            "all of them are in trials.parquet.</p>"
        )
    return f"<section><h2>Per configuration</h2><table>{head}{rows}</table>{more}</section>"


def facts_section(data: ReportData, summary_only: bool) -> str:
    """One line of counts (`summary_only`), or the full study facts section."""
    counts = ", ".join(f"{v} {esc(k)}" for k, v in data.counts.items() if v)
    line = (
        f'<p class="muted">spec hash {esc(data.spec_hash)} · created by prunetune '
        f"{esc(data.prunetune_version)} · {data.n_trials} trials: {counts or 'none yet'}</p>"
    )
    if summary_only:
        return line
    status_rows = "".join(
        f'<tr><td class="l">{esc(k)}</td><td>{v}</td></tr>' for k, v in data.counts.items()
    )
    reasons = ", ".join(f"{esc(k)}: {v}" for k, v in data.excluded_counts.items()) or "none"
    return (
        "<section><h2>Study facts</h2>"
        + line
        + f'<table><tr><th class="l">status</th><th>trials</th></tr>{status_rows}</table>'
        + f"<p>Pruned trials left out of the gain fit: {reasons}.</p>"
        + _listing("Excluded trials", data.excluded, sum(data.excluded_counts.values()))
        + _listing(
            "Unfinished trials",
            data.incomplete,
            sum(data.counts[s] for s in ("stopped", "running", "pending")),
        )
        + f"<details><summary>spec.yaml</summary><pre>{esc(data.spec_text)}</pre></details></section>"
    )


def environment_section(data: ReportData) -> str:
    """Where the numbers come from: the driver's environment and where the trials ran."""
    driver = (
        "<table>"
        + "".join(
            f'<tr><td class="l">{esc(k)}</td><td class="l">{esc(v)}</td></tr>'
            for k, v in data.environment
        )
        + "</table>"
        if data.environment
        else "<p>This study's study.json records no environment (created before it was recorded).</p>"
    )
    rows = "".join(
        f'<tr><td class="l">{esc(d)}</td><td class="l">{esc(v)}</td><td>{esc(t)}</td><td>{n}</td></tr>'
        for d, v, t, n in data.trial_environments
    )
    trials = (
        '<table><tr><th class="l">device</th><th class="l">torch</th><th>threads</th>'
        f"<th>trials</th></tr>{rows}</table>"
        if rows
        else "<p>No trial has reported yet.</p>"
    )
    return (
        "<section><h2>Environment</h2>"
        '<p class="muted">The driver that created the study (study.json → environment), then where '
        "the trials ran, as each reported it (trials.parquet: device, torch_version, threads; a "
        "resumed trial counts where it last ran).</p>"
        f"{driver}{trials}</section>"
    )


def _listing(title: str, items: tuple[tuple[str, str], ...], total: int) -> str:
    if not items:
        return ""
    rows = "".join(
        f'<tr><td class="l">{esc(a)}</td><td class="l">{esc(b)}</td></tr>' for a, b in items
    )
    note = f" (first {MAX_LISTED} of {total})" if total > len(items) else ""
    return f"<details><summary>{esc(title)}: {total}{note}</summary><table>{rows}</table></details>"
