"""Answering one HTTP request of the API: the front door, the status views, commands, webhooks.

Every request passes `access.refusal` first; any exception while answering
is a JSON 500 naming the request. A follower hands webhooks and commands to
the leader (see controller.api for the whole picture).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog

from controller import metrics, pages
from controller.access import (
    _ACTION,
    FORWARD_HEADERS,
    FORWARDED,
    RESIGNED,
    classify,
    github_signature_ok,
    gitlab_token_ok,
    refusal,
)
from controller.client import ACTION_TIMEOUT_SECONDS
from controller.connection import Connection
from controller.errors import Busy, EnvctlError, NotFound, StateLocked, TerraformError

if TYPE_CHECKING:
    from controller.api import Api

log = structlog.get_logger("envctl.api")
FORWARD_TIMEOUT_SECONDS = 5.0


class Handler(Connection):
    api: Api

    def served_by(self) -> str:
        return self.api.role()

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
        """Why this request may not go on (status, message), or None (see access.refusal)."""
        api = self.api
        return refusal(
            self.command,
            self.path,
            self.headers,
            allowed_hosts=api.allowed_hosts(),
            anonymous_read=api.settings.anonymous_read,
            tokens=(api.api_token, api.read_token) if api.tokens_required else None,
        )

    def _get(self) -> None:  # noqa: PLR0912 - the routes of GET, one branch each
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
            page = pages.page(self.api.rows(), self._meta(), time.time())
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path.startswith("/environments/"):
            detail = self.api.store.detail(path.removeprefix("/environments/"))
            if detail is None:
                self._send(HTTPStatus.NOT_FOUND, pages.not_found(path), "text/html; charset=utf-8")
                return
            page = pages.environment_page(detail, self._meta(), time.time())
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

    def _act(self, action: str, name: str | None) -> None:  # noqa: PLR0912 - the commands a client may ask, one branch each
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

    def _post(self) -> None:  # noqa: PLR0911 - one refusal per reason, each answered where it is found
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
