"""The daemon's HTTP server against slow and hostile clients, on raw loopback sockets.

Everything about a request body is decided from its headers before a byte of it
is read; a connection gets REQUEST_SECONDS to send its request; at most
MAX_HANDLERS connections are handled at once and the next is told 503; every
error has the same JSON shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controller.api import MAX_BODY, MAX_HANDLERS
from tests.integration.conftest import Aws, Repo, make_settings
from tests.integration.test_cli import raw_settings, write_config
from tests.integration.test_daemon import start_daemon, stop_daemon, wait_for
from tests.integration.test_leader import logged

SECRET = "hostile-clients-secret"


class Daemon:
    """`envctl run` with webhooks on, its API port and its process."""

    def __init__(self, proc, log: Path, port: int) -> None:
        self.proc, self.log, self.port = proc, log, port

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def raw(self, request: bytes) -> tuple[int, dict]:
        """Send `request` as is; the status code and JSON body of the answer."""
        with self.connect() as sock:
            sock.sendall(request)
            return parse(read_all(sock))


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


@pytest.fixture
def daemon(tmp_path: Path, repo: Repo, aws: Aws, toolchain) -> Iterator[Daemon]:
    settings = make_settings(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["api"] = {"host": "127.0.0.1", "port": 0, "webhooks": True}
    raw["repository"]["poll_seconds"] = 3600
    log = tmp_path / "envctl.log"
    proc = start_daemon(write_config(tmp_path, raw), log, ENVCTL_WEBHOOK_SECRET=SECRET)
    wait_for(lambda: logged(log, "api_listening") and logged(log, "pass_decided"), timeout=60)
    (listening,) = logged(log, "api_listening")
    yield Daemon(proc, log, int(listening["port"]))
    stop_daemon(proc, log)


def post(path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_content_length_is_required_numeric_and_bounded_before_anything_is_read(daemon: Daemon):
    """Missing -> 411, non-numeric or negative -> 400, over 1 MiB -> 413, each as {"error": ...}."""
    hook = "/hooks/github"
    assert daemon.raw(post(hook, {"X-GitHub-Event": "push"}))[0] == 411
    assert daemon.raw(post(hook, {"Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n"))[0] == 411
    for bad in ("abc", "-1", "1e3", "+5", " "):
        status, body = daemon.raw(post(hook, {"Content-Length": bad}, b"{}"))
        assert status == 400, bad
        assert set(body) == {"error"} and "Content-Length" in body["error"]
    status, body = daemon.raw(post(hook, {"Content-Length": str(MAX_BODY + 1)}, b"{"))
    assert (status, body) == (413, {"error": f"body over {MAX_BODY} bytes"})
    status, body = daemon.raw(b"NONSENSE\r\n\r\n")
    assert status == 400 and set(body) == {"error"}
    assert logged(daemon.log, "webhook_received") == []


def test_an_unsigned_endless_body_costs_no_memory(daemon: Daemon):
    """`Content-Length: -1` with 20 MiB behind it is refused at once; the process does not grow 20 MiB."""
    before = daemon.rss_kib()
    with daemon.connect() as sock:
        sock.sendall(post("/hooks/github", {"Content-Length": "-1", "X-GitHub-Event": "push"}))
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 20 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: it never read what we kept sending
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400") or answer == b""
    assert daemon.rss_kib() - before < 20 * 1024
    assert logged(daemon.log, "webhook_received") == []


def test_slow_clients_are_cut_off_and_health_still_answers(daemon: Daemon):
    """100 trickling clients are closed by the server within 15 s; /healthz answers meanwhile."""
    slow = []
    for index in range(100):
        sock = daemon.connect()
        # Half stop inside the headers, half inside a declared body.
        if index % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        else:
            sock.sendall(post("/hooks/github", {"Content-Length": "100"}, b"{"))
        slow.append(sock)
    opened = time.monotonic()
    with daemon.connect() as probe:
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(probe).split(b"\r\n", 1)[0].endswith(b"200 OK")
    closed = 0
    for sock in slow:
        sock.settimeout(max(0.1, opened + 15 - time.monotonic()))
        try:
            read_all(sock)
            closed += 1
        except TimeoutError:
            pass
        sock.close()
    assert closed == 100


def test_beyond_the_handler_pool_a_connection_gets_503_not_a_hang(daemon: Daemon):
    """With every handler held by a silent client, one more connection is answered 503 at once."""
    held = [daemon.connect() for _ in range(MAX_HANDLERS)]
    try:
        # Give the server's accept loop time to hand each of them a handler.
        time.sleep(1.0)
        answers = []
        for _ in range(5):
            with daemon.connect() as extra:
                extra.settimeout(5)
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answers.append(parse(read_all(extra)))
        assert (503, {"error": "too many connections; retry shortly"}) in answers
        assert {status for status, _ in answers} <= {200, 503}
    finally:
        for sock in held:
            sock.close()


def test_a_burst_of_signed_deliveries_is_answered_and_coalesced(daemon: Daemon):
    """500 signed deliveries from 50 threads: each answered 202 or 503, never reset; a few passes run."""
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = post(
        "/hooks/github",
        {"Content-Length": str(len(body)), "X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
        body,
    )
    passes_before = len(logged(daemon.log, "pass_decided"))
    answers: list[int] = []
    lock = threading.Lock()

    def deliver(_: int) -> None:
        status, _body = daemon.raw(request)
        with lock:
            answers.append(status)

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(deliver, range(500)))
    assert len(answers) == 500
    assert set(answers) <= {202, 503}
    assert answers.count(202) > 0
    wait_for(lambda: len(logged(daemon.log, "pass_decided")) > passes_before, timeout=30)
    time.sleep(3)
    passes = len(logged(daemon.log, "pass_decided")) - passes_before
    # Coalesced: a pass per debounce window of the burst, never one per delivery.
    assert 1 <= passes <= len(answers) // 20
