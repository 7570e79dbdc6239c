"""The API's front door on a real daemon over real sockets: who may read, who may operate.

A daemon with an operate and a read token: every refused request is refused before anything is
done (no run recorded, no Terraform started), and the CLI beside it still works with the token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.store import StatusStore
from tests.integration.conftest import Aws, Repo, make_settings, preview
from tests.integration.test_api_hostile import Daemon, read_all
from tests.integration.test_cli import envctl, raw_settings, write_config
from tests.integration.test_daemon import start_daemon, stop_daemon, wait_for
from tests.integration.test_leader import logged

OPERATE = "operate-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


@pytest.fixture
def guarded(tmp_path: Path, repo: Repo, aws: Aws, toolchain) -> Iterator[tuple[Daemon, Path, StatusStore]]:
    """A daemon on loopback with both tokens; pr1 applied."""
    settings = make_settings(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["api"] = {"host": "127.0.0.1", "port": 0}
    raw["repository"]["poll_seconds"] = 3600
    repo.write("pr1", preview(1))
    log = tmp_path / "envctl.log"
    config = write_config(tmp_path, raw)
    proc = start_daemon(config, log, ENVCTL_API_TOKEN=OPERATE, ENVCTL_API_READ_TOKEN=READ)
    store = StatusStore(settings.workdir / "status.db")
    wait_for(lambda: store.load("pr1") is not None and store.load("pr1").phase.value == "Ready")
    (listening,) = logged(log, "api_listening")
    yield Daemon(proc, log, int(listening["port"])), config, store
    stop_daemon(proc, log)
    store.close()


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer(daemon: Daemon, method: str, path: str, **headers: str) -> int:
    base = {"Host": f"127.0.0.1:{daemon.port}", "Content-Type": "application/json"}
    merged = {**base, **{k.replace("_", "-"): v for k, v in headers.items()}}
    merged = {k: v for k, v in merged.items() if v}
    with daemon.connect() as sock:
        sock.sendall(request(method, path, merged, b"{}" if method == "POST" else b""))
        return int(read_all(sock).split(b" ", 2)[1])


def test_operating_routes_refuse_what_is_not_an_operators_request(guarded):
    """No token, a wrong one, the read token, text/plain, a foreign Host or Origin: each refused
    with its own status, and no run of any kind started."""
    daemon, _, store = guarded
    runs = len(store.runs(limit=1000))
    operate = f"Bearer {OPERATE}"
    for path in ("/api/environments/pr1/plan", "/api/environments/drift", "/api/environments/pr1/drift"):
        assert answer(daemon, "POST", path) == 401
        assert answer(daemon, "POST", path, Authorization="Bearer guess") == 401
        assert answer(daemon, "POST", path, Authorization=f"Bearer {READ}") == 403
        assert answer(daemon, "POST", path, Authorization=operate, Content_Type="text/plain") == 415
        assert answer(daemon, "POST", path, Authorization=operate, Host="attacker.example") == 421
        assert answer(daemon, "POST", path, Authorization=operate, Origin="http://attacker.example") == 403
    assert answer(daemon, "GET", "/api/environments/pr1/synth") == 401
    assert answer(daemon, "GET", "/api/environments/pr1/synth", Authorization=f"Bearer {READ}") == 403
    assert len(store.runs(limit=1000)) == runs
    assert logged(daemon.log, "client_command") == []


def test_reading_needs_a_token_and_either_token_reads(guarded):
    """Status JSON and pages: 401 without a token (not saying whether pr1 exists), 200 with either;
    probes and metrics stay open; a foreign Host is refused even with a token."""
    daemon, _, _ = guarded
    for path in (
        "/",
        "/environments/pr1",
        "/api/environments",
        "/api/environments/pr1",
        "/api/environments/nope",
    ):
        assert answer(daemon, "GET", path) == 401, path
    for token in (READ, OPERATE):
        assert answer(daemon, "GET", "/api/environments/pr1", Authorization=f"Bearer {token}") == 200
        assert answer(daemon, "GET", "/", Authorization=f"Bearer {token}") == 200
    assert (
        answer(daemon, "GET", "/api/environments", Authorization=f"Bearer {READ}", Host="evil.example") == 421
    )
    for path in ("/healthz", "/readyz", "/metrics"):
        assert answer(daemon, "GET", path, Host="10.0.0.9:8080") == 200, path


def test_the_cli_beside_the_daemon_sends_its_token(guarded):
    """`envctl plan` and `status` beside the daemon work with ENVCTL_API_TOKEN, and say 401's
    message without it."""
    daemon, config, _ = guarded
    with_token = {**os.environ, "ENVCTL_API_TOKEN": OPERATE}
    plan = envctl("plan", "pr1", config=config, env=with_token)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.strip().splitlines()[-1].startswith("pr1: No changes.")
    without = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_API")}
    refused = envctl("plan", "pr1", config=config, env=without)
    assert refused.returncode == 1 and "a valid token is required" in refused.stderr
    (client,) = logged(daemon.log, "client_command")
    assert client["action"] == "plan"


def test_a_wildcard_api_without_an_operate_token_does_not_start(tmp_path, repo, aws, toolchain):
    """`envctl run` on 0.0.0.0 with no ENVCTL_API_TOKEN exits 2 naming the variable."""
    settings = make_settings(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["api"] = {"host": "0.0.0.0", "port": 0}
    without = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_API")}
    result = envctl("run", config=write_config(tmp_path, raw), env=without, timeout=60)
    assert result.returncode == 2
    assert "set ENVCTL_API_TOKEN" in result.stderr and json.dumps("0.0.0.0")[1:-1] in result.stderr
