"""A local HTTP server whose every request goes to one function: what the test fakes of GitHub,
GitLab and a fault-injecting AWS proxy are built on."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any

Handler = http.server.BaseHTTPRequestHandler


class LocalServer:
    """Serves `handle(request)` for GET, POST and PUT on a free loopback port, in threads."""

    def __init__(self, handle: Callable[[Handler], None]) -> None:
        class _Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                handle(self)

            do_POST = do_GET
            do_PUT = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(
    handler: Handler,
    status: int,
    value: Any,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> None:
    """Send `value` (bytes as they are, anything else as JSON) with these headers."""
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    handler.send_response(status)
    headers = {"Content-Type": content_type, **(headers or {})}
    for key, header in headers.items():
        handler.send_header(key, header)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
