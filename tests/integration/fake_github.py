"""A local stand-in for GitHub's REST API: the deployment endpoints envctl uses, each request
checked against GitHub's published OpenAPI description (npm `@octokit/openapi`, installed by
`make test` into .tools/npm) with openapi-core.

Only the operations envctl calls are served; their part of the description (the operations
and every component they refer to, transitively) is cut from the full 13 MB document once per
session, so validation stays fast. A request the description does not allow fails the test
that made it (`FakeGitHub.invalid` is checked by the fixture).
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.integration.local_http import LocalServer, answer

OPERATIONS = (
    ("/app/installations/{installation_id}/access_tokens", "post"),
    ("/repos/{owner}/{repo}/pulls/{pull_number}", "get"),
    ("/repos/{owner}/{repo}/deployments", "get"),
    ("/repos/{owner}/{repo}/deployments", "post"),
    ("/repos/{owner}/{repo}/deployments/{deployment_id}/statuses", "post"),
    ("/repos/{owner}/{repo}/deployments/{deployment_id}/statuses", "get"),
)


def description_path() -> Path:
    tools = Path(os.environ.get("ENVCTL_TOOLS_DIR", Path(__file__).parents[2] / ".tools"))
    return tools / "npm" / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"


def cut(full: dict[str, Any], operations: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The part of `full` that `operations` need: their path items and every referenced component."""
    paths: dict[str, Any] = {}
    for path, method in operations:
        item = full["paths"][path]
        paths.setdefault(path, {k: v for k, v in item.items() if k == "parameters"})[method] = item[method]
    components: dict[str, dict[str, Any]] = {}
    pending = [paths]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                _, _, kind, name = ref.split("/", 3)
                target = full["components"][kind][name]
                components.setdefault(kind, {})[name] = target
                pending.append(target)
            pending.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            pending.extend(node)
    return {"openapi": full["openapi"], "info": full["info"], "paths": paths, "components": components}


_DESCRIPTION: dict[str, Any] | None = None


def description() -> dict[str, Any]:
    global _DESCRIPTION  # noqa: PLW0603 - one parse of 13 MB per test session
    if _DESCRIPTION is None:
        _DESCRIPTION = cut(json.loads(description_path().read_text()), OPERATIONS)
    return _DESCRIPTION


def example(path: str, method: str, status: str) -> dict[str, Any]:
    """The description's own example response of an operation (what a client must parse)."""
    content = description()["paths"][path][method]["responses"][status]["content"]["application/json"]
    examples = content["examples"]
    value = next(iter(examples.values()))
    if "$ref" in value:
        value = description()["components"]["examples"][value["$ref"].rsplit("/", 1)[1]]
    body = copy.deepcopy(value["value"])
    return body[0] if isinstance(body, list) else body


@dataclass
class Failure:
    """Answer the next `times` requests with this status and these headers."""

    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"message": "Service Unavailable"})


class FakeGitHub:
    """Serves the deployment endpoints from memory; records and validates every request."""

    def __init__(self, token: str, repository: str = "acme/shop") -> None:
        from openapi_core import OpenAPI

        spec = description()
        self.token = token
        self.app: tuple[int, int, str] | None = None
        """(app id, installation id, public key PEM): installation tokens for a GitHub App's JWT."""
        self.repository = repository
        self.pulls: dict[int, str] = {}
        """Pull request number -> head commit."""
        self.deployments: list[dict[str, Any]] = []
        self.statuses: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.failures: list[Failure] = []
        self.lock = threading.Lock()
        self.local = LocalServer(self.handle)
        self.url = self.local.url
        self.openapi = OpenAPI.from_dict({**spec, "servers": [{"url": self.url}]})

    def close(self) -> None:
        self.local.close()

    # --- what tests look at --------------------------------------------------------------------

    def states(self, environment: str) -> list[str]:
        """Every status created for `environment`'s deployments, in order."""
        ids = [d["id"] for d in self.deployments if d["environment"] == environment]
        return [s["state"] for i in ids for s in self.statuses[i]]

    def deliveries(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    # --- serving -------------------------------------------------------------------------------

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        record = {
            "method": handler.command,
            "path": split.path,
            "query": dict(parse_qsl(split.query)),
            "body": json.loads(body) if body else None,
            "authorization": handler.headers.get("Authorization", ""),
            "at": time.monotonic(),
        }
        with self.lock:
            self.requests.append(record)
            valid = self.validate(handler, split, body)
            failure = self.failures[0] if self.failures else None
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.pop(0)
        if failure is not None:
            return answer(handler, failure.status, failure.body, failure.headers)
        if not valid:
            return answer(handler, 422, {"message": "Validation Failed"})
        if self.app is not None and (
            match := re.fullmatch(r"/app/installations/(\d+)/access_tokens", split.path)
        ):
            return answer(handler, *self.installation_token(int(match.group(1)), record["authorization"]))
        if record["authorization"] not in (f"token {self.token}", f"Bearer {self.token}"):
            return answer(
                handler,
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        with self.lock:
            status, result = self.route(handler.command, split.path, record)
        answer(handler, status, result)

    def installation_token(self, installation: int, authorization: str) -> tuple[int, dict[str, Any]]:
        """A GitHub App's JWT (RS256, iss = app id) exchanged for this fake's token."""
        import jwt

        assert self.app is not None
        app_id, installation_id, public_key = self.app
        try:
            claims = jwt.decode(authorization.removeprefix("Bearer "), public_key, algorithms=["RS256"])
        except jwt.PyJWTError as error:
            return 401, {"message": f"A JSON web token could not be decoded: {error}"}
        if str(claims.get("iss")) != str(app_id) or installation != installation_id:
            return 404, {"message": "Not Found"}
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        token = example("/app/installations/{installation_id}/access_tokens", "post", "201")
        token.update(token=self.token, expires_at=expires)
        return 201, token

    def validate(self, handler: Any, split: Any, body: bytes) -> bool:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        fake = self

        class Request:
            host_url = fake.url
            path = split.path
            method = handler.command.lower()
            parameters = RequestParameters(
                query=ImmutableMultiDict(parse_qsl(split.query)),
                header=Headers(list(handler.headers.items())),
                cookie=ImmutableMultiDict(),
            )
            content_type = (handler.headers.get("Content-Type") or "").lower()

        Request.body = body or None  # type: ignore[attr-defined]
        try:
            self.openapi.validate_request(Request())
        except Exception as error:  # every way a request can break the description
            detail = "; ".join(str(e) for e in getattr(error, "schema_errors", []) or [])
            self.invalid.append(f"{handler.command} {split.path}: {error} {detail}".strip())
            return False
        return True

    def route(self, method: str, path: str, record: dict[str, Any]) -> tuple[int, Any]:  # noqa: PLR0911 - one route per branch, as the API description lists them
        prefix = f"/repos/{self.repository}"
        if not path.startswith(prefix + "/"):
            return 404, {"message": "Not Found"}
        rest = path.removeprefix(prefix)
        if match := re.fullmatch(r"/pulls/(\d+)", rest):
            number = int(match.group(1))
            if number not in self.pulls:
                return 404, {"message": "Not Found"}
            pull = example("/repos/{owner}/{repo}/pulls/{pull_number}", "get", "200")
            pull["number"] = number
            pull["head"]["sha"] = self.pulls[number]
            return 200, pull
        if rest == "/deployments" and method == "GET":
            query = record["query"]
            found = [
                d
                for d in self.deployments
                if all(d.get(k) == query[k] for k in ("sha", "environment") if k in query)
            ]
            return 200, sorted(found, key=lambda d: -d["id"])
        if rest == "/deployments" and method == "POST":
            data = record["body"]
            deployment = example("/repos/{owner}/{repo}/deployments", "post", "201")
            deployment.update(
                id=len(self.deployments) + 1,
                sha=data["ref"],
                ref=data["ref"],
                environment=data.get("environment", "production"),
                transient_environment=data.get("transient_environment", False),
                production_environment=data.get("production_environment", False),
                description=data.get("description"),
                payload=data.get("payload", {}),
            )
            self.deployments.append(deployment)
            self.statuses[deployment["id"]] = []
            return 201, deployment
        if match := re.fullmatch(r"/deployments/(\d+)/statuses", rest):
            number = int(match.group(1))
            if number not in self.statuses:
                return 404, {"message": "Not Found"}
            if method == "GET":
                return 200, list(reversed(self.statuses[number]))
            data = record["body"]
            status = example("/repos/{owner}/{repo}/deployments/{deployment_id}/statuses", "post", "201")
            status.update(
                id=sum(len(s) for s in self.statuses.values()) + 1,
                state=data["state"],
                description=data.get("description", ""),
                environment_url=data.get("environment_url", ""),
                log_url=data.get("log_url", ""),
            )
            self.statuses[number].append(status)
            # GitHub marks a transient environment's older deployments inactive on success.
            if data["state"] == "success" and data.get("auto_inactive", True):
                environment = next(d for d in self.deployments if d["id"] == number)["environment"]
                for other in self.deployments:
                    if other["environment"] == environment and other["id"] != number:
                        previous = self.statuses[other["id"]]
                        if previous and previous[-1]["state"] != "inactive":
                            previous.append({**previous[-1], "state": "inactive", "auto": True})
            return 201, status
        return 404, {"message": "Not Found"}


def fake_github(token: str) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(token)
    try:
        yield fake
    finally:
        fake.close()
    assert not fake.invalid, "requests GitHub's API description does not allow:\n" + "\n".join(fake.invalid)
