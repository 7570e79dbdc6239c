"""A local stand-in for GitLab's REST API (v4): the environment, deployment and merge request
endpoints envctl uses, each request checked against the fields GitLab documents for it
(docs.gitlab.com/api/environments, /api/deployments, /api/merge_requests): required fields
present, no field the endpoint does not take, values of the documented kinds.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.integration.local_http import LocalServer, answer

DEPLOYMENT_STATUSES = ("running", "success", "failed", "canceled")
# (method, path pattern) -> (required fields, optional fields, field kinds)
DOCUMENTED: dict[tuple[str, str], tuple[set[str], set[str], dict[str, Any]]] = {
    ("POST", "environments"): (
        {"name"},
        {"external_url", "tier", "description"},
        {"name": str, "external_url": str},
    ),
    ("PUT", "environments/ID"): (
        set(),
        {"name", "external_url", "tier", "description"},
        {"external_url": str},
    ),
    ("POST", "environments/ID/stop"): (set(), {"force"}, {"force": bool}),
    ("POST", "deployments"): (
        {"environment", "sha", "ref", "tag"},
        {"status"},
        {"environment": str, "sha": str, "ref": str, "tag": bool, "status": DEPLOYMENT_STATUSES},
    ),
    ("PUT", "deployments/ID"): ({"status"}, set(), {"status": DEPLOYMENT_STATUSES}),
}


class FakeGitLab:
    def __init__(self, token: str, project: str = "acme/shop") -> None:
        self.token = token
        self.project = project
        self.merge_requests: dict[int, tuple[str, str]] = {}
        """iid -> (head sha, source branch)."""
        self.environments: list[dict[str, Any]] = []
        self.deployments: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()
        self.local = LocalServer(self.handle)
        self.url = self.local.url

    def close(self) -> None:
        self.local.close()

    def statuses(self, environment: str) -> list[tuple[str, str]]:
        """(sha, status) of every deployment status `environment` went through, in order."""
        return [
            (d["sha"], s) for d in self.deployments if d["environment"] == environment for s in d["history"]
        ]

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        record = {
            "method": handler.command,
            "path": split.path,
            "query": dict(parse_qsl(split.query)),
            "body": body,
        }
        with self.lock:
            self.requests.append(record)
            if handler.headers.get("PRIVATE-TOKEN") != self.token:
                return answer(handler, 401, {"message": "401 Unauthorized"})
            prefix = "/api/v4/projects/"
            if not split.path.startswith(prefix):
                return answer(handler, 404, {"message": "404 Not Found"})
            project, _, rest = split.path.removeprefix(prefix).partition("/")
            if unquote(project) != self.project:
                return answer(handler, 404, {"message": "404 Project Not Found"})
            shape = re.sub(r"/\d+", "/ID", rest)
            problem = self.check(handler.command, shape, body)
            if problem:
                self.invalid.append(f"{handler.command} {split.path}: {problem}")
                return answer(handler, 400, {"message": problem})
            status, result = self.route(handler.command, rest, record)
            answer(handler, status, result)

    @staticmethod
    def check(method: str, shape: str, body: dict[str, Any]) -> str:
        documented = DOCUMENTED.get((method, shape))
        if documented is None:
            return "" if method == "GET" else f"{method} {shape} is not an endpoint envctl should call"
        required, optional, kinds = documented
        missing = sorted(required - set(body))
        if missing:
            return f"missing {', '.join(missing)}"
        unknown = sorted(set(body) - required - optional)
        if unknown:
            return f"{', '.join(unknown)}: not a parameter of this endpoint"
        for key, kind in kinds.items():
            if key not in body:
                continue
            ok = body[key] in kind if isinstance(kind, tuple) else isinstance(body[key], kind)
            if not ok:
                return f"{key}={body[key]!r} is not allowed"
        return ""

    def route(self, method: str, rest: str, record: dict[str, Any]) -> tuple[int, Any]:  # noqa: PLR0911, PLR0912 - one route per branch, as the API description lists them
        body = record["body"]
        if match := re.fullmatch(r"merge_requests/(\d+)", rest):
            iid = int(match.group(1))
            if iid not in self.merge_requests:
                return 404, {"message": "404 Not found"}
            sha, branch = self.merge_requests[iid]
            return 200, {"id": 1000 + iid, "iid": iid, "sha": sha, "source_branch": branch, "state": "opened"}
        if rest == "environments" and method == "GET":
            name = record["query"].get("name")
            return 200, [e for e in self.environments if name is None or e["name"] == name]
        if rest == "environments" and method == "POST":
            environment = {
                "id": len(self.environments) + 1,
                "name": body["name"],
                "external_url": body.get("external_url"),
                "state": "available",
                "tier": "development",
            }
            self.environments.append(environment)
            return 201, environment
        if match := re.fullmatch(r"environments/(\d+)(/stop)?", rest):
            environment = next((e for e in self.environments if e["id"] == int(match.group(1))), None)
            if environment is None:
                return 404, {"message": "404 Not found"}
            if match.group(2):
                environment["state"] = "stopped"
            else:
                environment.update({k: v for k, v in body.items() if k in ("external_url", "name")})
            return 200, environment
        if rest == "deployments" and method == "POST":
            if not any(e["name"] == body["environment"] for e in self.environments):
                # GitLab creates the environment when a deployment names an unknown one.
                self.environments.append(
                    {"id": len(self.environments) + 1, "name": body["environment"], "state": "available"}
                )
            deployment = {
                "id": len(self.deployments) + 1,
                "iid": len(self.deployments) + 1,
                "sha": body["sha"],
                "ref": body["ref"],
                "environment": body["environment"],
                "status": body.get("status", "created"),
                "history": [body.get("status", "created")],
            }
            self.deployments.append(deployment)
            return 201, {k: v for k, v in deployment.items() if k != "history"}
        if match := re.fullmatch(r"deployments/(\d+)", rest):
            deployment = next((d for d in self.deployments if d["id"] == int(match.group(1))), None)
            if deployment is None:
                return 404, {"message": "404 Not found"}
            if method == "PUT":
                deployment["status"] = body["status"]
                deployment["history"].append(body["status"])
            return 200, {k: v for k, v in deployment.items() if k != "history"}
        return 404, {"message": "404 Not found"}


def fake_gitlab(token: str) -> Iterator[FakeGitLab]:
    fake = FakeGitLab(token)
    try:
        yield fake
    finally:
        fake.close()
    assert not fake.invalid, "requests GitLab's API documentation does not allow:\n" + "\n".join(fake.invalid)
