"""Run the small-scale replications of docs/replications.md and check the science still works.

Each finding's mini preset runs through the real CLI (``prunetune run <preset>``, one study at a
time, seeds 0-4); its statistic is read from the study's exported tables (``fits.parquet``,
``trials.parquet``, ``epochs.parquet``), its pre-registered decision rule applied, and the result
compared with the table recorded in docs/replications.md ("Results"): the new estimate must lie
inside the recorded 95% CI and give the same verdict. Prints one line per finding.

Usage (from the repository root; minutes per preset on 2 CPU cores, too slow for CI):

    python3 bench/replications.py                 # every finding
    python3 bench/replications.py P1-b            # one finding (or a preset name: its findings)
    python3 bench/replications.py --storage DIR   # studies kept in DIR (default: a temp dir)
    python3 bench/replications.py --no-run --storage DIR   # read studies already run there

Running an existing study again resumes it, so a second call with the same ``--storage`` only
re-reads. Exit status 1 when a finding disagrees with its recorded row.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "replications.md"
RESAMPLES, BOOT_SEED = 10_000, 0  # docs/replications.md: percentile bootstrap, default_rng(0)

# finding -> (preset, predicted sign of the statistic)
FINDINGS: dict[str, tuple[str, int]] = {
    "P1-b": ("mini-bartoldson2020-flatness", +1),
    "P1-c": ("mini-bartoldson2020-noise", +1),
    "P2-a": ("mini-jin2022-imp", +1),
    "P2-b": ("mini-jin2022-imp", -1),
    "P2-c": ("mini-jin2022-imp", +1),
}


@dataclass(frozen=True)
class Stat:
    estimate: float
    low: float
    high: float
    n: int
    label: str = ""  # what the number is (P2-b: its round)

    def text(self) -> str:
        label = f"{self.label}: " if self.label else ""
        return f"{label}{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def verdict(stat: Stat, sign: int) -> str:
    """docs/replications.md: the CI wholly on the predicted side replicates; an estimate of 0 or
    on the other side does not; else inconclusive."""
    if sign * stat.estimate <= 0 or math.isnan(stat.estimate):
        return "does not replicate"
    if min(sign * stat.low, sign * stat.high) > 0:
        return "replicates"
    return "inconclusive"


def boot_mean(values: np.ndarray) -> tuple[float, float, float]:
    """The mean and its 95% percentile-bootstrap CI, resampling the values."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(BOOT_SEED)
    idx = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
    means = values[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def _fit_row(study: Path, fit: str, group: str | None = None) -> Stat:
    fits = pd.read_parquet(study / "fits.parquet")
    rows = fits[(fits.fit == fit) & (fits.level == "trial")]
    if group is not None:
        rows = rows[rows.group == group]
    if len(rows) != 1:
        raise SystemExit(f"{study}: fits.parquet has {len(rows)} trial-level rows of fit {fit!r}")
    r = rows.iloc[0]
    return Stat(r.pearson_r, r.pearson_ci_low, r.pearson_ci_high, int(r.n))


def _trials(study: Path) -> pd.DataFrame:
    trials = pd.read_parquet(study / "trials.parquet")
    bad = trials[trials.status != "ok"]
    if len(bad):
        raise SystemExit(f"{study}: {len(bad)} trials not ok: the statistic needs every trial")
    return trials


def p1b(study: Path) -> Stat:
    return _fit_row(study, "p1b_stability_hessian")


def p1c(study: Path) -> Stat:
    t = _trials(study)
    arm = t[
        (t.pruning_perturbation_variant == "iter")
        & (t.pruning_perturbation_steps == 160)
        & t.pruning_perturbation_mode.isin(["zeroing", "gaussian"])
    ]
    return Stat(*boot_mean(arm.gain.to_numpy()), n=len(arm))


def _imp(study: Path) -> pd.DataFrame:
    t = _trials(study)
    return t[t.pruning_method == "imp"]


def p2a(study: Path) -> Stat:
    t = _imp(study)
    key = ["dataset_label_noise_fraction", "seed"]
    imp = t[t.pruning_imp_control == "none"].set_index(key).gain
    sfs = t[t.pruning_imp_control == "sparse_from_start"].set_index(key).gain
    diff = (imp - sfs).dropna()
    if len(diff) != len(imp):
        raise SystemExit(f"{study}: IMP and sparse_from_start trials do not pair up")
    return Stat(*boot_mean(diff.to_numpy()), n=len(diff))


def p2b_rounds(study: Path) -> dict[int, Stat]:
    """Per IMP round k >= 1: train_loss(IMP) - train_loss(extended dense) at the round's last
    epoch, clean labels, paired by seed."""
    t = _imp(study)
    t = t[t.dataset_label_noise_fraction == 0]
    keys = {c: set(t[t.pruning_imp_control == c].trial_key) for c in ("none", "extended_dense")}
    cols = ["trial_key", "epoch", "imp_round", "train_loss"]
    epochs = pd.read_parquet(study / "epochs.parquet", columns=cols)
    last = epochs.sort_values("epoch").groupby(["trial_key", "imp_round"]).tail(1)
    seed_of = t.set_index("trial_key").seed
    loss = {}
    for control, ks in keys.items():
        rows = last[last.trial_key.isin(ks)].assign(seed=lambda d: d.trial_key.map(seed_of))
        loss[control] = rows.set_index(["imp_round", "seed"]).train_loss
    diff = (loss["none"] - loss["extended_dense"]).dropna()
    out = {}
    for k, d in diff.groupby(level="imp_round"):
        if k >= 1:
            out[int(k)] = Stat(*boot_mean(d.to_numpy()), n=len(d), label=f"round {int(k)}")
    return out


def p2b(study: Path) -> Stat:
    rounds = p2b_rounds(study)
    return min(rounds.values(), key=lambda s: (s.high, int(s.label.split()[-1])))


def p2c(study: Path) -> Stat:
    return _fit_row(study, "p2c_gain_vs_label_noise", group="none")


STATISTIC = {"P1-b": p1b, "P1-c": p1c, "P2-a": p2a, "P2-b": p2b, "P2-c": p2c}
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_STAT_RE = re.compile(rf"({_NUM}) \[({_NUM}), ({_NUM})\]")


def recorded(doc: Path = DOC) -> dict[str, tuple[Stat, str]]:
    """The first recorded row per finding of the doc's "Results" table (seeds 0-4): its statistic
    column ``[label: ]estimate [low, high]``, n and verdict."""
    rows: dict[str, tuple[Stat, str]] = {}
    text = doc.read_text().split("\n## Results", 1)[-1]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[0] not in FINDINGS or cells[0] in rows:
            continue
        m = _STAT_RE.search(cells[2])
        if m is None or not cells[3].isdigit():
            continue
        label = cells[2][: m.start()].rstrip(": =").strip("`")
        stat = Stat(*map(float, m.groups()), n=int(cells[3]), label=label)
        rows[cells[0]] = (stat, cells[4].strip("*"))
    return rows


def run_study(preset: str, storage: Path) -> Path:
    """``prunetune run <preset> --storage <storage>`` (resumes a study already there)."""
    cmd = [sys.executable, "-m", "orchestrator.cli.app", "run", preset, "--storage", str(storage)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"prunetune run {preset} failed with exit code {done.returncode}")
    return storage / preset


def check(finding: str, study: Path, rows: dict[str, tuple[Stat, str]]) -> bool:
    preset, sign = FINDINGS[finding]
    stat = STATISTIC[finding](study)
    got = verdict(stat, sign)
    line = f"{finding}  {preset:30s} {stat.text()}  n={stat.n}  {got}"
    if finding not in rows:
        print(f"{line}  | no recorded row")
        return True
    ref, ref_verdict = rows[finding]
    same_label = not stat.label or ref.label == stat.label  # P2-b: the same round
    inside = ref.low <= stat.estimate <= ref.high and same_label
    ok = inside and got == ref_verdict
    where = "inside" if inside else "OUTSIDE"
    result = "OK" if ok else "DIFFERS"
    print(f"{line}  | recorded {ref.text()} {ref_verdict}: {where} its CI -> {result}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="findings (P1-b ...) or mini preset names")
    parser.add_argument("--storage", type=Path, help="where the studies live (default: temp dir)")
    parser.add_argument("--no-run", action="store_true", help="read studies already in --storage")
    args = parser.parse_args(argv)
    names = args.names or list(FINDINGS)
    findings = [f for f in FINDINGS if f in names or FINDINGS[f][0] in names]
    unknown = set(names) - set(findings) - {FINDINGS[f][0] for f in findings}
    if unknown or not findings:
        parser.error(f"unknown finding or preset {sorted(unknown)}; choose from {list(FINDINGS)}")
    if args.no_run and args.storage is None:
        parser.error("--no-run needs --storage")
    storage = args.storage or Path(tempfile.mkdtemp(prefix="replications-"))
    rows = recorded()
    ok, studies = True, {}
    for finding in findings:
        preset = FINDINGS[finding][0]
        if preset not in studies:
            studies[preset] = storage / preset if args.no_run else run_study(preset, storage)
        ok &= check(finding, studies[preset], rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
