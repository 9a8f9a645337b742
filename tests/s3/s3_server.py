"""A local S3 API server for the tests: moto's standalone S3 on 127.0.0.1:PORT.

``python s3_server.py PORT`` serves until SIGTERM. One fix-up on the way out: moto 5.2 names the
root element of the CompleteMultipartUpload answer ``CompleteMultipartUploadResponse`` where S3
says ``CompleteMultipartUploadResult``; the AWS C++ SDK inside pyarrow then takes the 200 OK for
an error embedded in it and retries until it gives up, so every pyarrow write (pyarrow writes
each object as a multipart upload) would fail. The rename makes the answer the one S3 gives.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

WRONG, RIGHT = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"


class CompleteUploadFix:
    """WSGI middleware: rename the CompleteMultipartUpload answer's root element."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or "uploadId=" not in environ.get("QUERY_STRING", ""):
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
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, CompleteUploadFix(app), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
