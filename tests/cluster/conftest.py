"""Fixtures for the real-cluster tests: a two-node Ray cluster on this machine, token auth on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from local_ray_cluster import LocalCluster, can_hide_dirs, pids_of_node


@pytest.fixture(scope="module")
def ray_cluster():
    """A head (1 CPU) and one worker node (1 CPU) on 127.0.0.1 with RAY_AUTH_MODE=token.

    The worker runs in a private mount namespace with ``<root>/node-local`` hidden from it (when
    this machine allows `unshare`), so that directory is a path only the head can see.
    ``<root>/shared`` is seen by both. Everything started is stopped at the end, also on failure.
    """
    root = Path(tempfile.mkdtemp(prefix="ptc-"))  # short: Ray's socket paths live below it
    cluster = LocalCluster(root)
    cluster.hides_node_local = can_hide_dirs()
    try:
        cluster.start_head()
        cluster.add_worker(
            "worker", hidden_dir=root / "node-local" if cluster.hides_node_local else None
        )
        yield cluster
    finally:
        cluster.stop()
        leftover = pids_of_node(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes of the test cluster survived its stop: {leftover}"
