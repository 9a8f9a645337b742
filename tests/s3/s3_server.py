"""A local S3 API server for the tests: moto's standalone S3 on 127.0.0.1:PORT.

``python s3_server.py PORT ACCESS_KEY [REQUEST_LOG]`` serves until SIGTERM; with REQUEST_LOG it
appends one JSON line per request (method, path, query, bytes received and sent, seconds spent;
``bench/storage_overhead.py`` breaks a study's storage traffic down with it). Two fix-ups around
moto 5.2:

- Credentials: a request signed with another access key id is refused with S3's 403
  ``InvalidAccessKeyId``. (moto's own IAM authentication refuses every ListObjectsV2 request
  with SignatureDoesNotMatch, and pyarrow lists to tell a missing key from a directory, so it
  cannot be used; the secret key is not checked.)
- moto names the root element of the CompleteMultipartUpload answer
  ``CompleteMultipartUploadResponse`` where S3 says ``CompleteMultipartUploadResult``; the AWS
  C++ SDK inside pyarrow then takes the 200 OK for an error embedded in it and retries until it
  gives up, so every pyarrow write (each object is a multipart upload) would fail. The rename
  makes the answer the one S3 gives.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

WRONG, RIGHT = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"


DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code><Message>The '
    b"AWS Access Key Id you provided does not exist in our records.</Message></Error>"
)


class S3Fixups:
    """WSGI middleware: the access key check and the CompleteMultipartUpload rename."""

    def __init__(self, app, access_key: str, request_log: str | None = None) -> None:
        self.app = app
        self.credential = f"Credential={access_key}/"
        self.request_log = open(request_log, "a") if request_log else None  # noqa: SIM115
        self.log_lock = threading.Lock()

    def __call__(self, environ, start_response):
        if self.request_log is None:
            return self.handle(environ, start_response)
        start = time.perf_counter()
        body = b"".join(self.handle(environ, start_response))
        entry = {
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "bytes_in": int(environ.get("CONTENT_LENGTH") or 0),
            "bytes_out": len(body),
            "s": time.perf_counter() - start,
            "t": time.time(),
        }
        with self.log_lock:
            self.request_log.write(json.dumps(entry) + "\n")
            self.request_log.flush()
        return [body]

    def handle(self, environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        if self.credential not in auth:
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(DENIED)))]
            start_response("403 Forbidden", headers)
            return [b"" if environ["REQUEST_METHOD"] == "HEAD" else DENIED]
        if environ["REQUEST_METHOD"] != "POST" or "uploadId=" not in environ.get(
            "QUERY_STRING", ""
        ):
            return self.app(environ, start_response)
        captured: list = []

        def capture(status, headers, exc_info=None):
            captured[:] = [status, headers, exc_info]
            return lambda data: None

        body = b"".join(self.app(environ, capture)).replace(WRONG, RIGHT)
        status, headers, exc_info = captured
        headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(status, headers, exc_info)
        return [body]


def main() -> None:
    port, access_key = int(sys.argv[1]), sys.argv[2]
    request_log = sys.argv[3] if len(sys.argv) > 3 else None
    app = S3Fixups(DomainDispatcherApplication(create_backend_app), access_key, request_log)
    run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
