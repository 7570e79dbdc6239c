"""Who may do what through the API: roles and tokens, and which webhook deliveries are genuine.

Pure functions (constant-time comparisons), so they can be tested and fuzzed
without a server: the role a request needs, the role a bearer token carries,
GitHub's HMAC signature and GitLab's token, and what a verified delivery asks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from email.message import Message
from http import HTTPStatus

from controller.environments import NAME_PATTERN

GITHUB_EVENTS = ("push", "pull_request")


_ACTION = re.compile(rf"/api/environments(?:/(?P<name>{NAME_PATTERN.pattern}))?/(?P<action>plan|drift|synth)")


FORWARDED = "X-Envctl-Forwarded"


RESIGNED = "X-Envctl-Signature-256"
"""A follower's HMAC-SHA256 of a verified GitLab delivery's body (the token is not forwarded)."""


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


def classify(source: str, event: str | None, body: bytes) -> tuple[int, str]:  # noqa: PLR0911 - one outcome per kind of delivery
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


def refusal(  # noqa: PLR0911 - the front door: one guard clause per check, in order
    method: str,
    path: str,
    headers: Mapping[str, str] | Message[str, str],
    *,
    allowed_hosts: set[str],
    anonymous_read: bool,
    tokens: tuple[str | None, str | None] | None,
) -> tuple[HTTPStatus, str] | None:
    """Why a request may not go on (status, message), or None: Host (DNS rebinding), Content-Type
    and Origin (CSRF), then the token the route's role needs (`tokens`: operate and read tokens,
    None when the API requires none)."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    needed = role_needed(method, path)
    if needed is None:
        return None
    # DNS rebinding: a page on another name must not reach this API through the browser.
    host = (headers.get("Host") or "").strip().lower()
    name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
    if name not in allowed_hosts:
        return (
            HTTPStatus.MISDIRECTED_REQUEST,
            f"Host {host[:80]!r} is not one this API answers; see api.allowed_hosts",
        )
    if method == "POST":
        # A browser sends text/plain and form bodies cross-site without asking (CSRF); JSON it
        # must ask for first, and this API never says yes.
        kind = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            return (
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {kind[:60]!r} is not allowed; expected application/json",
            )
        origin = headers.get("Origin")
        if origin and (urllib.parse.urlsplit(origin).netloc or "").lower() != host:
            return HTTPStatus.FORBIDDEN, "cross-origin requests are not allowed"
    if (needed == READ and anonymous_read) or tokens is None:
        return None
    role = token_role(headers.get("Authorization"), *tokens)
    if role is None:
        return HTTPStatus.UNAUTHORIZED, "a valid token is required: Authorization: Bearer <token>"
    if needed == OPERATE and role != OPERATE:
        return HTTPStatus.FORBIDDEN, "this token may read status only; this route needs ENVCTL_API_TOKEN's"
    return None
