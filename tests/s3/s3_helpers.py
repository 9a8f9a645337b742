"""The S3 server of the object-store tests (moto, :mod:`s3_server`), and a TCP relay in front of
it that can drop the endpoint and bring it back (the endpoint-fault tests)."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pyarrow.fs as pafs
import requests

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"


def free_port() -> int:
    """A free TCP port above 20000 on 127.0.0.1."""
    for _ in range(100):
        port = 20000 + secrets.randbelow(40000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port above 20000")


class S3Server:
    """moto's S3 (:mod:`s3_server`) on a free port, accepting one random access key id (a
    wrong one is refused as S3 refuses it)."""

    def __init__(self, workdir: Path, request_log: Path | None = None) -> None:
        self.workdir = workdir
        self.request_log = request_log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.access_key = ""
        self.secret_key = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None, **changes: str) -> dict[str, str]:
        """The variables a user sets for an S3-compatible store (as for MinIO)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        } | changes

    def start(self) -> None:
        self.access_key = "PT" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_hex(20)
        log = open(self.workdir / "s3_server.log", "w")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "s3_server.py"), str(self.port), self.access_key]
            + ([str(self.request_log)] if self.request_log else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server did not start: {self.log()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "s3_server.log").read_text()[-3000:]

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def bucket(self, prefix: str = "b") -> str:
        """A new empty bucket; its name."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def fs(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem on this server (for the tests' own reads)."""
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.endpoint,
            scheme="http",
            region=REGION,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


class Relay:
    """A TCP relay on a free port to `target_port`: the endpoint the CLI is given in the fault
    tests. :meth:`drop` closes the listener and every open connection (the endpoint is gone:
    connections are refused); :meth:`restore` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def drop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
