"""Fixtures for the object-store tests: a real S3 API on 127.0.0.1 (moto's standalone server).

Why moto: it installs from PyPI with the test extra (``moto[server]``), runs as one Python
process with no binary to download, and answers the S3 HTTP API that pyarrow's S3 filesystem
(the AWS C++ SDK) speaks; tests/s3/s3_server.py adds an access key check and one fix-up.
prunetune reaches it only as a user reaches MinIO or S3: ``AWS_ENDPOINT_URL`` and the standard
credential variables in the environment of the CLI processes (:attr:`S3Server.env`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))  # orch_helpers

from s3_helpers import S3Server  # noqa: E402


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The S3 server for the whole session; stopped at the end."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
