"""Test options: the default run is the fast suite; `--all` adds slow, ray, browser, cluster, s3."""

from __future__ import annotations

import os

import pytest

GATED = ("slow", "ray", "browser", "cluster", "s3")

# Result keys the schema does not know are an error in every test (and in the processes the
# tests start): a key the trainable reports can never be dropped silently.
os.environ["PRUNETUNE_STRICT_RECORDS"] = "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help="also run tests marked slow, ray, browser, cluster and s3 (what .ci/run does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--all") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="gated marker: run with --all (or select with -m)")
    for item in items:
        if any(item.get_closest_marker(m) for m in GATED):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One data directory for the whole test session, so each MNIST-1D size is generated once."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A real local Ray (2 CPUs) for one test module; yields the fault-injection directory.

    RAY_AUTH_MODE is left as the environment had it when ray was imported: Ray caches the mode at
    import, so setting it here would split driver and cluster. Unset, a new local cluster turns
    token auth on (and creates the token) by itself (Ray 2.60,
    ``ray/_private/authentication/authentication_token_setup.py::enable_token_auth_by_default``).
    """
    import ray

    from trainables.tune_trainable import FAULT_DIR_ENV

    fault_dir = tmp_path_factory.mktemp("faults")
    ray.init(
        "local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {FAULT_DIR_ENV: str(fault_dir), "OMP_NUM_THREADS": "1"}},
    )
    try:
        yield fault_dir
    finally:
        ray.shutdown()
