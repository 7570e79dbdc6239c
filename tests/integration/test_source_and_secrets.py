"""Git and secrets handled like production software: real git over smart HTTP, real Terraform children.

A git server with basic auth (git's own `git http-backend` behind a small CGI
server) is reached with credentials from the environment; neither the clone's
config nor any log line holds them. Terraform's children never see envctl's
own secrets. Stale lock files and hostile file names in the history do not
stop a pass.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import git
import pytest

from controller.errors import SourceError
from controller.settings import secrets_from
from controller.source import GitSource
from tests.integration.conftest import Aws, Repo, World, make_settings, preview
from tests.integration.test_cli import envctl, raw_settings, status, write_config

USER, PASSWORD = "ci-bot", "s3cr3t-git-password-4711"


class GitHttpServer:
    """Smart HTTP git with basic auth: `git http-backend` as a CGI program behind ThreadingHTTPServer."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []
        expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        exec_path = subprocess.check_output(["git", "--exec-path"], text=True).strip()
        backend = Path(exec_path) / "git-http-backend"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _cgi(self) -> None:
                authorization = self.headers.get("Authorization", "")
                owner.requests.append((self.command, "auth" if authorization else "anonymous"))
                if authorization != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(owner.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": username,
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                cgi = subprocess.run([str(backend)], input=body, env=env, capture_output=True, check=True)
                out = cgi.stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                code = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name.lower() == "status":
                        code = int(value.split()[0])
                    elif name:
                        headers.append((name, value))
                self.send_response(code)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _cgi
            do_POST = _cgi

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def git_http(repo: Repo) -> Iterator[GitHttpServer]:
    server = GitHttpServer(repo.origin.parent, USER, PASSWORD)
    yield server
    server.close()


def test_credentials_from_the_environment_reach_git_and_never_the_disk_or_logs(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain, git_http: GitHttpServer
):
    """GIT_USERNAME/GIT_PASSWORD authenticate a fetch; the clone's config and the log never hold them."""
    repo.write("pr1", preview(1))
    settings = make_settings(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["repository"]["url"] = f"{git_http.base}/origin.git"
    config = write_config(tmp_path, raw)
    anonymous = envctl("reconcile", config=config, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    assert anonymous.returncode == 1
    assert "cannot fetch main" in anonymous.stderr
    secrets = {**os.environ, "GIT_USERNAME": USER, "GIT_PASSWORD": PASSWORD}
    result = envctl("reconcile", config=config, env=secrets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert status(config)["pr1"]["phase"] == "Ready"
    assert ("GET", "auth") in git_http.requests
    on_disk = [p.read_bytes() for p in settings.workdir.rglob("*") if p.is_file() and p.suffix != ".db"]
    assert not any(PASSWORD.encode() in data for data in on_disk)
    clone_config = (settings.workdir / "repo.git" / "config").read_text()
    assert f"url = {git_http.base}/origin.git" in clone_config
    assert PASSWORD not in result.stdout + result.stderr + anonymous.stdout + anonymous.stderr


def test_credentials_inside_the_url_are_taken_out_of_it(tmp_path: Path, repo: Repo, git_http: GitHttpServer):
    """A URL carrying user:password fetches, but the clone's config holds the URL without them."""
    repo.write("pr1", preview(1))
    url = f"{git_http.base.replace('http://', f'http://{USER}:{PASSWORD}@')}/origin.git"
    source = GitSource(url, "main", "environments", tmp_path / "work")
    try:
        revision = source.fetch()
        assert list(source.files(revision)) == ["environments/pr1.yaml"]
        assert PASSWORD not in (tmp_path / "work" / "repo.git" / "config").read_text()
        assert PASSWORD not in repr(source.credentials)
    finally:
        source.close()
    # A GIT_TOKEN alone is sent with the conventional user name, which this server refuses.
    token = secrets_from({"GIT_TOKEN": PASSWORD}).git
    assert token is not None and token.username == "x-access-token"
    url = f"{git_http.base}/origin.git"
    other = GitSource(url, "main", "environments", tmp_path / "w2", credentials=token)
    try:
        with pytest.raises(SourceError, match="cannot fetch main"):
            other.fetch()
    finally:
        other.close()


def test_terraform_children_never_see_envctl_secrets(tmp_path: Path, repo: Repo, aws: Aws, toolchain):
    """A local-exec printing its environment shows AWS variables but no envctl secret, by name or value."""
    repo.write("pr1", preview(1, print_environment=True))
    settings = make_settings(tmp_path, repo, aws, toolchain)
    config = write_config(tmp_path, raw_settings(settings))
    secrets = {
        "ENVCTL_WEBHOOK_SECRET": "webhook-secret-value-1234",
        "ENVCTL_GITHUB_TOKEN": "ghp_token_value_5678",
        "GIT_USERNAME": "someone",
        "GIT_PASSWORD": "git-password-value-9012",
        "GIT_TOKEN": "git-token-value-3456",
        "ENVCTL_SOMETHING_ELSE": "not-for-terraform",
    }
    result = envctl("reconcile", "--log-level", "debug", config=config, env={**os.environ, **secrets})
    assert result.returncode == 0, result.stdout[-3000:]
    marker = "null_resource.environment (local-exec)"
    printed = [line for line in result.stdout.splitlines() if marker in line]
    assert any("AWS_ACCESS_KEY_ID=" in line for line in printed)
    assert any("TF_IN_AUTOMATION=" in line for line in printed)
    for name, value in secrets.items():
        assert not any(f"{name}=" in line for line in printed), name
        assert value not in result.stdout + result.stderr, name


def test_a_stale_config_lock_does_not_block_a_restart(world: World):
    """A crash left repo.git/config.lock: the next start clears it before its first git command."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.reconciler.source.close()
    lock = world.settings.workdir / "repo.git" / "config.lock"
    lock.write_text("[remote]\n")
    repository = world.settings.repository
    world.reconciler.source = GitSource(repository.url, "main", repository.path, world.settings.workdir)
    world.repo.write("pr2", preview(2))
    result = world.reconciler.run_pass()
    assert result.error == ""
    assert result.outcomes == {"pr2": "applied"}
    assert not lock.exists()


def test_no_file_name_in_the_history_confuses_expiry_times(tmp_path: Path, repo: Repo):
    """Files named `@x.yaml`, `123.yaml` or with a newline get their own commit times, read exactly."""
    clone = Path(repo.clone.working_tree_dir)
    times = {}
    for index, name in enumerate(["pr1.yaml", "@1.yaml", "1700000000.yaml", "pr2\n.yaml", "pr3.yaml"]):
        (clone / "environments").mkdir(exist_ok=True)
        (clone / "environments" / name).write_text("kind: persistent\n")
        repo.clone.index.add([f"environments/{name}"])
        at = 1_800_000_000 + index * 1000
        repo.clone.index.commit(f"add {name!r}", commit_date=f"{at} +0000", author_date=f"{at} +0000")
        times[f"environments/{name}"] = float(at)
    repo.clone.remotes.origin.push("HEAD:refs/heads/main", force=True).raise_if_error()
    source = GitSource(str(repo.origin), "main", "environments", tmp_path / "work")
    try:
        assert source.last_changes(source.fetch()) == times
    finally:
        source.close()
    assert git.Repo(repo.origin).head.commit.committed_date == 1_800_004_000
