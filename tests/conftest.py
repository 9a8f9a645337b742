"""Test options: the default run is the fast suite; `--all` adds slow, ray, browser, cluster."""

from __future__ import annotations

import pytest

GATED = ("slow", "ray", "browser", "cluster")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help="also run tests marked slow, ray, browser and cluster (what .ci/run does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--all") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="gated marker: run with --all (or select with -m)")
    for item in items:
        if any(item.get_closest_marker(m) for m in GATED):
            item.add_marker(skip)
