"""HTTP connections with limits, under the API's request handler (controller.handler).

A client has REQUEST_SECONDS for its whole request (slowloris), a body must be
declared and at most MAX_BODY, and http.server's own errors are answered in the
API's JSON shape.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

MAX_BODY = 1024 * 1024
REQUEST_SECONDS = 10.0
"""A connection has this long to send its request line, headers and body; then it is closed."""


class Connection(BaseHTTPRequestHandler):
    """One HTTP connection with limits: a deadline for the whole request, a declared and bounded
    body, http.server's own errors in the API's JSON shape."""

    server_version = "envctl"
    # Answer a garbled request line with a status line and headers (HTTP/0.9 would send neither).
    default_request_version = "HTTP/1.0"
    timeout = REQUEST_SECONDS  # per read; the whole request also has REQUEST_SECONDS (see setup)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        # A client that trickles its request (slowloris) is cut off REQUEST_SECONDS after it
        # connected, however slowly each byte comes.
        self._read = threading.Event()
        self._deadline = threading.Timer(REQUEST_SECONDS, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        if not self._read.is_set():
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too long...) in the one JSON shape."""
        self._read.set()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._json(code, {"error": message or HTTPStatus(code).phrase})

    def _body(self) -> bytes | None:
        """The POST body, or None after answering why not; decided before a byte of it is read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._json(
                HTTPStatus.LENGTH_REQUIRED,
                {"error": "Content-Length required; chunked bodies are not accepted"},
            )
            return None
        declared = self.headers.get("Content-Length")
        if declared is None:
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return None
        if not declared.strip().isdigit():
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"Content-Length: {declared[:40]!r} is not allowed; expected 0 to {MAX_BODY}"},
            )
            return None
        length = int(declared)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            return None  # the client went away or the deadline cut it off: nobody to answer
        self._read.set()
        return body

    def _send(
        self,
        status: int,
        body: bytes | str,
        content_type: str = "application/json",
        served_by: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Envctl-Served-By", served_by or self.served_by())
        self.end_headers()
        self.wfile.write(data)

    def served_by(self) -> str:
        """Which replica answers (the API's role); a plain connection says nothing more."""
        return "this replica"

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value, indent=2), headers=headers)
