"""The HTTP server inside `envctl run`: health, readiness, metrics, status, git webhooks.

A webhook only requests a refresh: git stays the source of truth, so a
delivery triggers a fetch and a pass, never acts on its payload. Deliveries are
verified (GitHub: HMAC-SHA256 of the body; GitLab: the shared token) with
constant-time comparisons; anything unverified gets 401 and has no effect.

With leader election, a Service sends requests to any replica. A follower
answers status requests and verified webhooks with the leader's response
(the leader's URL is in the lease), so people see current status and a
delivery is never dropped by the replica that does not act. A follower that
cannot reach the leader serves its own last copy of the status, marked so,
and answers a webhook with 503.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import structlog

from controller import metrics
from controller.access import (
    classify,
    github_signature_ok,
    gitlab_token_ok,
    is_loopback,
)
from controller.client import call, client_headers, fetch_rows
from controller.connection import MAX_BODY
from controller.errors import EnvctlError
from controller.handler import Handler
from controller.settings import ApiSettings
from controller.store import StatusStore

log = structlog.get_logger("envctl.api")
__all__ = [
    "MAX_BODY",
    "MAX_HANDLERS",
    "Api",
    "call",
    "classify",
    "client_headers",
    "fetch_rows",
    "github_signature_ok",
    "gitlab_token_ok",
    "is_loopback",
]
MAX_HANDLERS = 128
"""Connections handled at once; one more is answered 503 at once and closed."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues while every handler is busy (a burst of webhook deliveries)."""
DELIVERY_MEMORY_SECONDS = 3600.0
"""GitHub delivery IDs are remembered this long: a replay within it is ignored."""
DELIVERIES_KEPT = 10000
"""At most this many delivery IDs are remembered (the oldest are forgotten first)."""


class Actions(Protocol):
    """What `envctl plan`, `drift` and `synth` ask a running daemon for (see controller.reconciler)."""

    def plan_report(self, name: str) -> dict[str, Any]: ...

    def drift_report(self, name: str | None, repair: bool = False) -> dict[str, Any]: ...

    def synth_document(self, name: str) -> dict[str, Any]: ...


class Api:
    """Serves the status store and accepts webhooks; runs in daemon threads."""

    def __init__(
        self,
        settings: ApiSettings,
        store: StatusStore,
        *,
        refresh: Callable[[], None],
        rows: Callable[[], list[dict[str, Any]]],
        webhook_secret: str | None,
        gitlab_secret: str | None = None,
        role: Callable[[], str] = lambda: "leader",
        leader: Callable[[], str | None] = lambda: None,
        actions: Actions | None = None,
        pull_url: str | None = None,
        api_token: str | None = None,
        read_token: str | None = None,
        advertised: str | None = None,
    ) -> None:
        self.settings = settings
        self.api_token = api_token
        """Operate: every route. None on a loopback address: no token needed (a laptop)."""
        self.read_token = read_token
        self.advertised = advertised
        """The URL followers forward to (its host is allowed in the Host header)."""
        self.store = store
        self.refresh = refresh
        self.rows = rows
        self.secret = webhook_secret
        """GitHub's HMAC key (ENVCTL_GITHUB_WEBHOOK_SECRET, or the older ENVCTL_WEBHOOK_SECRET)."""
        self.gitlab_secret = gitlab_secret
        """GitLab's token (ENVCTL_GITLAB_WEBHOOK_SECRET): never the same as GitHub's key, which
        GitLab would otherwise send in clear with every delivery."""
        self._deliveries: dict[str, float] = {}
        self._deliveries_lock = threading.Lock()
        self.role = role
        self.leader = leader
        self.actions = actions
        self.pull_url = pull_url
        """`...{number}`: where a pull request is seen (from the github/gitlab settings)."""
        handler = type("BoundHandler", (Handler,), {"api": self})
        try:
            self.server = _Server((settings.host, settings.port), handler)
        except OSError as error:
            # A busy or forbidden port is a setting to change, not a crash.
            raise EnvctlError(
                f"api: cannot listen on {settings.host}:{settings.port} ({error.strerror or error}); "
                "change api.port, or set api: null to run without the HTTP server"
            ) from error
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="envctl-api", daemon=True)
        metrics.STORE.source = self._snapshot

    def first_delivery(self, delivery: str, now: float | None = None) -> bool:
        """Whether `delivery` was not seen in the last hour (and remember it)."""
        now = time.monotonic() if now is None else now
        with self._deliveries_lock:
            # Oldest first (insertion order): forget what is over an hour old, and beyond
            # DELIVERIES_KEPT the oldest, so a flood cannot grow this without bound.
            while self._deliveries:
                oldest, seen = next(iter(self._deliveries.items()))
                if now - seen <= DELIVERY_MEMORY_SECONDS and len(self._deliveries) < DELIVERIES_KEPT:
                    break
                del self._deliveries[oldest]
            if delivery in self._deliveries:
                return False
            self._deliveries[delivery] = now
            return True

    def allowed_hosts(self) -> set[str]:
        """Host header values (without port) this API answers on its pages and /api routes."""
        hosts = {"localhost", "127.0.0.1", "::1", self.settings.host, *self.settings.allowed_hosts}
        for url in (self.settings.public_url, self.advertised):
            if url:
                hosts.add(urllib.parse.urlsplit(url).hostname or "")
        return {h.lower() for h in hosts if h and h not in ("0.0.0.0", "::")}  # noqa: S104

    @property
    def tokens_required(self) -> bool:
        """Whether requests need a token: always once one is set, and always off loopback."""
        return bool(self.api_token or self.read_token) or not is_loopback(self.settings.host)

    @property
    def local_url(self) -> str:
        """Where a process in the same pod or machine reaches this API."""
        host = self.settings.host
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - a wildcard, not a bind
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        log.info(
            "api_listening",
            host=self.settings.host,
            port=self.port,
            webhooks=[name for name, key in (("github", self.secret), ("gitlab", self.gitlab_secret)) if key],
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _snapshot(self) -> tuple[dict[str, int], int, float | None]:
        phases: dict[str, int] = {}
        drifted = 0
        for record in self.store.load_all().values():
            phases[record.phase.value] = phases.get(record.phase.value, 0) + 1
            drifted += record.drift_status == "Drifted"
        last = self.store.get_meta("last_fetch_at")
        return phases, drifted, float(last) if last else None

    def readiness(self) -> tuple[bool, str]:
        """Ready once a fetch succeeded and the store answers; not while the source fails for long."""
        try:
            last = self.store.get_meta("last_fetch_at")
            failing = self.store.get_meta("source_failing_since")
        except Exception as problem:  # the store is unusable: say so, do not crash the probe
            return False, f"status store unusable: {problem}"
        if self.role() == "follower":
            return True, "follower: serving status"
        if not last:
            return False, "no successful fetch yet"
        if failing and time.time() - float(failing) > self.settings.source_failure_seconds:
            detail = self.store.get_meta("source_error") or "unknown"
            return False, f"source failing for {int(time.time() - float(failing))} s: {detail}"
        return True, "ok"


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_HANDLERS of them, and a backlog sized for bursts."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._handlers = threading.BoundedSemaphore(MAX_HANDLERS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._handlers.acquire(blocking=False):
            # Every handler is busy (slow clients, a flood): say so now rather than queue forever.
            metrics.API_REFUSED.inc()
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._handlers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._handlers.release()


def _refuse(request: socket.socket) -> None:
    """Answer 503 on a connection no handler can take, without waiting for it."""
    body = json.dumps({"error": "too many connections; retry shortly"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(head.encode() + body)
