"""The CLI's side of the API: asking a running daemon (with its token) and reading its answers."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from http import HTTPStatus
from typing import Any

from controller.errors import EnvctlError, NotFound
from controller.settings import secret

ACTION_TIMEOUT_SECONDS = 1800.0
"""A plan or drift check the leader runs for a follower's client may take as long as Terraform."""


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
