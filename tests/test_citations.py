"""The repository cites the official code (repository, file, function) and docs/reproducing.md,
never the project's internal notes: they are not part of the repository, so a reader could not
follow such a citation."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Generated or local, never shipped (.gitignore): studies, datasets, build outputs.
SKIPPED_TOP = {"studies", "data", "build", "dist"}
# The internal notes, by name and by place, assembled from pieces so that this file does not
# match its own search.
NOTES = re.compile(
    "|".join(
        re.escape(head + tail)
        for head, tail in (
            ("papers", ".md"),
            ("performance", "-notes"),
            ("ray-optuna", "-notes"),
            ("official-code", "-comparison"),
            ("/work/", "shared"),
        )
    )
)


def _skipped(rel: Path) -> bool:
    hidden = any(p.startswith(".") or p == "__pycache__" for p in rel.parts)
    return hidden or rel.parts[0] in SKIPPED_TOP or rel.parts[0].endswith(".egg-info")


def _text_files() -> list[Path]:
    """Every text file of the repository (source, specs, docs, configs, Dockerfiles), relative."""
    out = []
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT)
        dirs[:] = sorted(d for d in dirs if not _skipped(here / d))
        for name in sorted(files):
            rel = here / name
            if not _skipped(rel) and b"\0" not in (ROOT / rel).read_bytes()[:4096]:
                out.append(rel)
    return out


def test_the_scan_sees_every_kind_of_file() -> None:
    kinds = {p.suffix or p.name for p in _text_files()}
    assert {".py", ".yaml", ".md", ".toml", "Dockerfile"} <= kinds
    assert Path("tests/test_citations.py") in _text_files()


def test_no_file_cites_the_internal_notes() -> None:
    hits = [
        f"{rel}:{number}: {line.strip()}"
        for rel in _text_files()
        for number, line in enumerate((ROOT / rel).read_text(errors="replace").splitlines(), 1)
        if NOTES.search(line)
    ]
    assert hits == [], "cite the official code or docs/reproducing.md instead:\n" + "\n".join(hits)
