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
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import structlog

from controller import metrics, views
from controller.errors import Busy, EnvctlError, NotFound, StateLocked, TerraformError
from controller.settings import ApiSettings, secret
from controller.store import StatusStore

log = structlog.get_logger("envctl.api")
MAX_BODY = 1024 * 1024
REQUEST_SECONDS = 10.0
"""A connection has this long to send its request line, headers and body; then it is closed."""
MAX_HANDLERS = 128
"""Connections handled at once; one more is answered 503 at once and closed."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues while every handler is busy (a burst of webhook deliveries)."""
GITHUB_EVENTS = ("push", "pull_request")
FORWARD_TIMEOUT_SECONDS = 5.0
ACTION_TIMEOUT_SECONDS = 1800.0
"""A plan or drift check the leader runs for a follower's client may take as long as Terraform."""
_ACTION = re.compile(r"/api/environments(?:/(?P<name>[a-z][a-z0-9]{0,15}))?/(?P<action>plan|drift|synth)")
FORWARDED = "X-Envctl-Forwarded"
RESIGNED = "X-Envctl-Signature-256"
"""A follower's HMAC-SHA256 of a verified GitLab delivery's body (the token is not forwarded)."""
DELIVERY_MEMORY_SECONDS = 3600.0
"""GitHub delivery IDs are remembered this long: a replay within it is ignored."""
DELIVERIES_KEPT = 10000
"""At most this many delivery IDs are remembered (the oldest are forgotten first)."""
# What a forwarded request keeps of the original: the leader verifies the delivery (and the
# caller's token) again.
FORWARD_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Hub-Signature-256",
    "X-Gitlab-Event",
    "X-Gitlab-Token",
)


OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
"""Probes and metrics: no token, no Host check (kubelet and Prometheus call them by IP)."""
READ, OPERATE = "read", "operate"


def role_needed(method: str, path: str) -> str | None:
    """Which role a request needs: None (open: probes, metrics, signed webhooks), READ or OPERATE.

    Reading: the status JSON and pages. Operating: anything that starts Terraform or returns a
    synthesized configuration (plan, drift, synth).
    """
    if path in OPEN_PATHS or (method == "POST" and path.startswith("/hooks/")):
        return None
    if _ACTION.fullmatch(path):
        return OPERATE
    return READ


def token_role(header: str | None, operate: str | None, read: str | None) -> str | None:
    """The role a `Authorization: Bearer ...` header carries (compared in constant time), or None."""
    if not header or not header.startswith("Bearer "):
        return None
    given = header.removeprefix("Bearer ").strip().encode()
    # Both compared, whatever the first gives: the time taken says nothing about which matched.
    is_operate = bool(operate) and hmac.compare_digest(given, (operate or "").encode())
    is_read = bool(read) and hmac.compare_digest(given, (read or "").encode())
    return OPERATE if is_operate else READ if is_read else None


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def github_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 is `sha256=` + HMAC-SHA256(secret, body), compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


def gitlab_token_ok(secret: str, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(secret.encode(), (header or "").encode())


def classify(source: str, event: str | None, body: bytes) -> tuple[int, str]:
    """What to do with a verified delivery: (status, outcome). Pure, so it can be fuzzed."""
    try:
        payload = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return HTTPStatus.BAD_REQUEST, "malformed JSON"
    if not isinstance(payload, dict):
        return HTTPStatus.BAD_REQUEST, "payload is not a JSON object"
    if source == "github":
        if event == "ping":
            return HTTPStatus.OK, "pong"
        if event in GITHUB_EVENTS:
            return HTTPStatus.ACCEPTED, "refresh"
        return HTTPStatus.ACCEPTED, f"ignored event {str(event)[:40]!r}"
    if event in ("Push Hook", "Merge Request Hook") or payload.get("object_kind") == "push":
        return HTTPStatus.ACCEPTED, "refresh"
    return HTTPStatus.ACCEPTED, f"ignored event {str(event)[:40]!r}"


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
        handler = type("Handler", (_Handler,), {"api": self})
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


class _Handler(BaseHTTPRequestHandler):
    api: Api
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
        self.send_header("X-Envctl-Served-By", served_by or self.api.role())
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, body: bytes | None = None, timeout: float = FORWARD_TIMEOUT_SECONDS) -> bool:
        """As a follower, answer with the leader's response; False when there is no leader to ask."""
        if self.api.role() != "follower" or self.headers.get(FORWARDED):
            return False
        leader = self.api.leader()
        if not leader:
            return False
        # The lease is written by whoever can write the table: only http(s), never to itself.
        target = urllib.parse.urlsplit(leader)
        if target.scheme not in ("http", "https") or not target.hostname or leader == self.api.advertised:
            log.warning(
                "forward_refused", leader=leader[:200], reason="not an http(s) URL of another replica"
            )
            metrics.FORWARD_FAILURES.inc()
            return False
        headers = {name: value for name in FORWARD_HEADERS if (value := self.headers.get(name))}
        headers[FORWARDED] = "1"
        if "X-Gitlab-Token" in headers:
            # Never GitLab's token in clear over the pod network: a signature of the body instead.
            del headers["X-Gitlab-Token"]
            if self.api.gitlab_secret and body is not None:
                digest = hmac.new(self.api.gitlab_secret.encode(), body, hashlib.sha256).hexdigest()
                headers[RESIGNED] = "sha256=" + digest
        # The leader's URL is checked to be http(s) where it is configured (settings, advertise_url).
        request = urllib.request.Request(  # noqa: S310
            leader.rstrip("/") + self.path, data=body, method=self.command, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                status, content_type = response.status, response.headers["Content-Type"]
                data = response.read()
        except urllib.error.HTTPError as answer:  # the leader's own 4xx/5xx: relay it
            status, content_type, data = answer.code, answer.headers["Content-Type"], answer.read()
        except (OSError, ValueError) as error:
            log.warning("forward_to_leader_failed", leader=leader, path=self.path, error=str(error))
            metrics.FORWARD_FAILURES.inc()
            return False
        self._send(status, data, content_type or "application/octet-stream", served_by="leader")
        return True

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value, indent=2), headers=headers)

    def _guarded(self, handle: Callable[[], None], *, admit: bool) -> None:
        """Any exception while answering becomes a JSON 500 naming what failed, never an empty reply."""
        try:
            if admit and not self._admitted():
                return
            handle()
        except Exception as error:  # a bug in a view or a store read: answer, log the traceback
            log.exception("api_request_failed", method=self.command, path=self.path[:200])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._json(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"error": f"{self.command} {self.path[:200]} failed: {type(error).__name__}: {error}"},
                )

    def do_GET(self) -> None:
        self._guarded(self._get, admit=True)

    def do_POST(self) -> None:
        self._guarded(self._post, admit=True)

    def _admitted(self) -> bool:
        """The front door: Host, Content-Type, Origin and token checks, before anything is done.

        Answers and returns False when the request may not go on.
        """
        refusal = self._refusal()
        if refusal is None:
            return True
        status, error = refusal
        # Nothing of the body is read: the connection closes after the answer.
        self._read.set()
        self.close_connection = True
        headers = {"WWW-Authenticate": 'Bearer realm="envctl"'} if status == HTTPStatus.UNAUTHORIZED else None
        self._json(status, {"error": error}, headers)
        return False

    def _refusal(self) -> tuple[HTTPStatus, str] | None:
        """Why this request may not go on (status, message), or None."""
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        needed = role_needed(self.command, path)
        if needed is None:
            return None
        # DNS rebinding: a page on another name must not reach this API through the browser.
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
        if name not in self.api.allowed_hosts():
            return (
                HTTPStatus.MISDIRECTED_REQUEST,
                f"Host {host[:80]!r} is not one this API answers; see api.allowed_hosts",
            )
        if self.command == "POST":
            # A browser sends text/plain and form bodies cross-site without asking (CSRF); JSON it
            # must ask for first, and this API never says yes.
            kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return (
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type {kind[:60]!r} is not allowed; expected application/json",
                )
            origin = self.headers.get("Origin")
            if origin and (urllib.parse.urlsplit(origin).netloc or "").lower() != host:
                return HTTPStatus.FORBIDDEN, "cross-origin requests are not allowed"
        if (needed == READ and self.api.settings.anonymous_read) or not self.api.tokens_required:
            return None
        role = token_role(self.headers.get("Authorization"), self.api.api_token, self.api.read_token)
        if role is None:
            return HTTPStatus.UNAUTHORIZED, "a valid token is required: Authorization: Bearer <token>"
        if needed == OPERATE and role != OPERATE:
            return (
                HTTPStatus.FORBIDDEN,
                "this token may read status only; this route needs ENVCTL_API_TOKEN's",
            )
        return None

    def _get(self) -> None:
        self._read.set()
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/healthz":
            self._send(HTTPStatus.OK, "ok\n", "text/plain")
        elif path == "/readyz":
            ready, reason = self.api.readiness()
            if ready:
                self._send(HTTPStatus.OK, reason + "\n", "text/plain")
            else:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": reason})
        elif path == "/metrics":
            self._send(HTTPStatus.OK, metrics.render(), "text/plain; version=0.0.4")
        elif (path == "/" or path.startswith(("/api/", "/environments/"))) and self._forward(
            timeout=ACTION_TIMEOUT_SECONDS if _ACTION.fullmatch(path) else FORWARD_TIMEOUT_SECONDS
        ):
            return
        elif path == "/api/environments":
            self._json(HTTPStatus.OK, self.api.rows())
        elif (match := _ACTION.fullmatch(path)) and match["action"] == "synth":
            self._act(match["action"], match["name"])
        elif path.startswith("/api/environments/"):
            name = path.removeprefix("/api/environments/")
            detail = self.api.store.detail(name)
            if detail is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no environment named {name!r}"})
                return
            self._json(HTTPStatus.OK, detail)
        elif path == "/":
            page = views.page(self.api.rows(), self._meta(), time.time())
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path.startswith("/environments/"):
            detail = self.api.store.detail(path.removeprefix("/environments/"))
            if detail is None:
                self._send(HTTPStatus.NOT_FOUND, views.not_found(path), "text/html; charset=utf-8")
                return
            page = views.environment_page(detail, self._meta(), time.time())
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _role(self) -> str:
        role = self.api.role()
        if role == "follower":
            return "follower; the leader is not reachable, so this is this replica's last copy"
        return role

    def _meta(self) -> dict[str, Any]:
        store = self.api.store
        last = store.get_meta("last_fetch_at")
        return {
            "last_fetch_at": float(last) if last else None,
            "revision": store.get_meta("last_revision") or "",
            "source_error": store.get_meta("source_error") or "",
            "leader": self.api.leader() or ("this replica" if self.api.role() == "leader" else "unknown"),
            "role": self._role(),
            "pull_url": self.api.pull_url,
        }

    def _act(self, action: str, name: str | None) -> None:
        """Run a plan, drift check or synth for `envctl` beside the daemon; answer its result."""
        actions = self.api.actions
        if actions is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "this daemon does not run commands for clients"})
            return
        if name is None and action != "drift":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{action} needs an environment name"})
            return
        if action != "synth" and self.api.role() == "follower":
            # A drift check may repair, and only the leader acts; a plan would read stale records.
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "this replica follows and cannot reach the leader; ask again shortly"},
            )
            return
        try:
            if action == "plan":
                assert name is not None
                result = actions.plan_report(name)
            elif action == "synth":
                assert name is not None
                result = actions.synth_document(name)
            else:
                # An API call never applies by itself: a repair is asked for explicitly.
                repair = "repair=1" in (self.path.split("?", 1)[1:] or [""])[0].split("&")
                if repair and name is None:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "a repair names one environment"})
                    return
                result = actions.drift_report(name, repair=repair)
        except NotFound as error:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(error)})
        except StateLocked as error:
            self._json(HTTPStatus.CONFLICT, {"error": str(error)})
        except Busy as error:
            self._json(
                HTTPStatus.TOO_MANY_REQUESTS, {"error": str(error)}, {"Retry-After": str(error.retry_after)}
            )
        except TerraformError as error:
            self._json(HTTPStatus.BAD_GATEWAY, {"error": str(error), "excerpt": error.excerpt})
        except EnvctlError as error:
            self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(error)})
        else:
            log.info("client_command", action=action, env=name)
            self._json(HTTPStatus.OK, result)

    def _post(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if (match := _ACTION.fullmatch(path)) and match["action"] in ("plan", "drift"):
            body = self._body()
            if body is None:
                self.close_connection = True
                return
            if self._forward(body, timeout=ACTION_TIMEOUT_SECONDS):
                return
            self._act(match["action"], match["name"])
            return
        source = path.rsplit("/", 1)[1] if path in ("/hooks/github", "/hooks/gitlab") else ""
        secret = self.api.secret if source == "github" else self.api.gitlab_secret if source else None
        if secret is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        body = self._body()
        if body is None:
            self.close_connection = True
            return
        if source == "github":
            verified = github_signature_ok(secret, body, self.headers.get("X-Hub-Signature-256"))
            event = self.headers.get("X-GitHub-Event")
        else:
            # GitLab sends its token in clear; a follower hands the delivery on signed instead.
            forwarded = bool(self.headers.get(FORWARDED))
            verified = gitlab_token_ok(secret, self.headers.get("X-Gitlab-Token")) or (
                forwarded and github_signature_ok(secret, body, self.headers.get(RESIGNED))
            )
            event = self.headers.get("X-Gitlab-Event")
        # Unverified deliveries have no effect at all.
        if not verified:
            log.warning("webhook_rejected", source=source, reason="signature")
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "signature or token does not match"})
            return
        if self.api.role() == "follower":
            # Only the leader acts: hand the delivery over, and never drop it silently.
            if not self._forward(body):
                self._json(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    {
                        "error": "this replica follows and cannot reach the leader; redeliver, or wait "
                        "for the leader's next poll"
                    },
                )
            return
        delivery = self.headers.get("X-GitHub-Delivery") if source == "github" else None
        if delivery and not self.api.first_delivery(delivery):
            # A replayed delivery (same ID within the hour) does nothing.
            log.warning("webhook_replayed", source=source, delivery=delivery[:80])
            self._json(HTTPStatus.ACCEPTED, {"outcome": "already received; ignored"})
            return
        status, outcome = classify(source, event, body)
        if outcome == "refresh":
            self.api.refresh()
        log.info("webhook_received", source=source, github_event=event, outcome=outcome)
        self._json(status, {"outcome": outcome})


def client_headers() -> dict[str, str]:
    """What the CLI sends a daemon: its operate token (ENVCTL_API_TOKEN or _FILE), when it has one."""
    token = secret(os.environ, "ENVCTL_API_TOKEN") or secret(os.environ, "ENVCTL_API_READ_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def call(api_url: str, method: str, path: str, timeout: float = ACTION_TIMEOUT_SECONDS) -> Any:
    """Ask a running daemon's API; its JSON answer, or EnvctlError with the daemon's own message.

    Raises OSError when the API does not answer.
    """
    headers = client_headers()
    if method == "POST":
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - our own API's URL, from the status database
        api_url.rstrip("/") + path, data=b"{}" if method == "POST" else None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as answer:
        try:
            message = json.loads(answer.read()).get("error", answer.reason)
        except ValueError:
            message = answer.reason
        error = NotFound(message) if answer.code == HTTPStatus.NOT_FOUND else EnvctlError(message)
        raise error from None


def fetch_rows(api_url: str, timeout: float = 5.0) -> tuple[str, list[dict[str, Any]]]:
    """The status rows a running daemon's API serves, and who served them (`leader`/`follower`).

    Raises OSError when the API does not answer and ValueError when it answers something else.
    """
    url = f"{api_url}/api/environments"
    request = urllib.request.Request(url, headers=client_headers())  # noqa: S310 - our own API's URL
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        served_by = response.headers.get("X-Envctl-Served-By", "")
        rows = json.loads(response.read())
    if not isinstance(rows, list):
        raise ValueError(f"{url} answered {type(rows).__name__}, not a list of environments")
    return served_by, rows
