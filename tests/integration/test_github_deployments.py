"""Previews shown on their pull requests as GitHub deployments, end to end: real git, real
Terraform, moto, and a local GitHub whose every request is checked against GitHub's published
OpenAPI description."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller import metrics
from controller.settings import Secrets
from controller.synth import SynthWorker
from controller.types import Phase
from tests.integration.conftest import Aws, Repo, World, build_world, make_settings, preview
from tests.integration.fake_github import Failure, FakeGitHub, fake_github

TOKEN = "ghp_envctltesttoken0123456789"
SHA1 = "a1" * 20
SHA2 = "b2" * 20


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    yield from fake_github(TOKEN)


def github_world(
    tmp_path: Path,
    repo: Repo,
    aws: Aws,
    toolchain: Any,
    worker: SynthWorker,
    github: FakeGitHub,
    token: str | None,
    **github_settings: Any,
) -> Iterator[World]:
    """A World reporting to `github`, with `token` (None: no token) and more github settings."""
    settings = make_settings(
        tmp_path,
        repo,
        aws,
        toolchain,
        github={
            "repository": github.repository,
            "api_url": github.url,
            "url_template": "https://{name}.preview.example.com",
            **github_settings,
        },
        api={"host": "127.0.0.1", "port": 0, "public_url": "https://envctl.example.com"},
    )
    settings = replace(settings, secrets=Secrets(github_token=token, values=(token,) if token else ()))
    for world in build_world(settings, repo, aws, worker):
        # The outbox's clock is the test's, so backoff and Retry-After are stepped, not slept.
        world.reconciler.feedback.clock = lambda now=world.now: now[0]
        yield world


@pytest.fixture
def gh(tmp_path, repo, aws, toolchain, demo_worker, github) -> Iterator[World]:
    yield from github_world(tmp_path, repo, aws, toolchain, demo_worker, github, TOKEN)


def with_commit(pr: int, sha: str, **parameters: Any) -> dict[str, Any]:
    return {**preview(pr, **parameters), "commit": sha}


def test_a_preview_is_a_deployment_on_its_pull_request(gh: World, github: FakeGitHub):
    """Apply start: a transient deployment of the commit with in_progress; Ready: success with
    the environment URL and the envctl page; a new commit: a new deployment, the old one
    inactive; closed: inactive. Every request matches GitHub's description."""
    gh.repo.write("pr41", with_commit(41, SHA1))
    assert gh.reconciler.run_pass().outcomes == {"pr41": "applied"}
    assert gh.reconciler.feedback.drain()
    (first,) = github.deployments
    assert (first["sha"], first["environment"]) == (SHA1, "pr41")
    created = github.deliveries()[0]["body"]
    assert created == {
        "ref": SHA1,
        "environment": "pr41",
        "description": "envctl preview environment pr41",
        "transient_environment": True,
        "production_environment": False,
        "auto_merge": False,
        "required_contexts": [],
    }
    assert github.states("pr41") == ["in_progress", "success"]
    success = github.statuses[first["id"]][-1]
    assert success["environment_url"] == "https://pr41.preview.example.com"
    assert success["log_url"] == "https://envctl.example.com/environments/pr41"
    record = gh.store.load("pr41")
    assert (record.deployment_id, record.deployment_commit) == (str(first["id"]), SHA1)
    # api_url is not api.github.com: the web address is the Enterprise Server's own.
    assert record.deployment_url == f"{github.url}/{github.repository}/deployments/pr41"

    gh.repo.write("pr41", with_commit(41, SHA2))
    assert gh.reconciler.run_pass().outcomes == {"pr41": "applied"}
    assert gh.reconciler.feedback.drain()
    assert [d["sha"] for d in github.deployments] == [SHA1, SHA2]
    assert [s["state"] for s in github.statuses[first["id"]]] == ["in_progress", "success", "inactive"]

    gh.repo.write("pr41", with_commit(41, SHA2) | {"state": "closed"})
    assert gh.reconciler.run_pass().outcomes == {"pr41": "destroyed"}
    assert gh.reconciler.feedback.drain()
    assert [s["state"] for s in github.statuses[github.deployments[1]["id"]]] == [
        "in_progress",
        "success",
        "inactive",
    ]
    assert all(r["authorization"] == f"token {TOKEN}" for r in github.requests)


def test_without_a_commit_the_pull_requests_head_is_used_and_failures_show(gh: World, github: FakeGitHub):
    """No `commit` in the file: the pull request's head from the API. A failing apply shows as
    `failure` with a one-line description; persistent environments are not reported."""
    github.pulls[42] = SHA1
    gh.repo.write("pr42", preview(42, fail="the bucket name is taken"))
    gh.repo.write("staging", {"kind": "persistent"})
    assert gh.reconciler.run_pass().outcomes == {"pr42": "failed", "staging": "applied"}
    assert gh.reconciler.feedback.drain()
    (deployment,) = github.deployments
    assert deployment["sha"] == SHA1
    statuses = github.statuses[deployment["id"]]
    assert [s["state"] for s in statuses] == ["in_progress", "failure"]
    assert "ApplyFailed" in statuses[-1]["description"]
    assert "\n" not in statuses[-1]["description"] and len(statuses[-1]["description"]) <= 140
    assert not [d for d in github.deployments if d["environment"] == "staging"]


def test_an_outage_delays_nothing_and_the_statuses_arrive_in_order(gh: World, github: FakeGitHub):
    """GitHub answers 503 through the whole apply: the apply finishes; the updates wait, backing
    off; after recovery they arrive in order, on one deployment."""
    github.failures.append(Failure(503, times=1000))
    gh.repo.write("pr43", with_commit(43, SHA1))
    assert gh.reconciler.run_pass().outcomes == {"pr43": "applied"}
    assert gh.phase("pr43") == "Ready"
    assert not gh.reconciler.feedback.drain(timeout=0.5)
    waiting = gh.store.outbox_pending("github")
    assert [json.loads(i.payload)["state"] for i in waiting] == ["in_progress", "success"]
    assert waiting[0].attempts >= 1 and waiting[0].next_at > gh.now[0]

    github.failures.clear()
    gh.now[0] += 3600
    assert gh.reconciler.feedback.drain()
    assert github.states("pr43") == ["in_progress", "success"]
    assert len(github.deployments) == 1


def test_an_update_that_failed_once_holds_back_the_ones_behind_it(gh: World, github: FakeGitHub):
    """One 503, on the first update only: the later update, due at once, is not sent past the
    failed one while it backs off; after the backoff both arrive, in order."""
    github.failures.append(Failure(503, times=1))
    gh.repo.write("pr45", with_commit(45, SHA1))
    assert gh.reconciler.run_pass().outcomes == {"pr45": "applied"}
    assert not gh.reconciler.feedback.drain(timeout=1.0)
    waiting = gh.store.outbox_pending("github")
    assert [json.loads(i.payload)["state"] for i in waiting] == ["in_progress", "success"]
    assert (waiting[0].attempts, waiting[1].attempts) == (1, 0)
    assert waiting[0].next_at > gh.now[0] >= waiting[1].next_at
    assert github.states("pr45") == []
    gh.now[0] += 3600
    assert gh.reconciler.feedback.drain()
    assert github.states("pr45") == ["in_progress", "success"]


def test_rate_limiting_is_honoured_with_retry_after(gh: World, github: FakeGitHub):
    """403 with Retry-After: 90 and no remaining quota: nothing is sent for 90 s, then it is."""
    gh.repo.write("pr44", with_commit(44, SHA1))
    github.failures.append(
        Failure(
            403,
            times=1,
            headers={"Retry-After": "90", "X-RateLimit-Remaining": "0"},
            body={"message": "You have exceeded a secondary rate limit."},
        )
    )
    before = metrics.FEEDBACK.labels("github", "rate_limited")._value.get()
    gh.reconciler.run_pass()
    assert not gh.reconciler.feedback.drain(timeout=0.3)
    (first, _) = gh.store.outbox_pending("github")
    assert first.next_at == pytest.approx(gh.now[0] + 90)
    asked = len(github.requests)
    gh.now[0] += 89
    assert not gh.reconciler.feedback.drain(timeout=0.3)
    assert len(github.requests) == asked
    gh.now[0] += 2
    assert gh.reconciler.feedback.drain()
    assert github.states("pr44") == ["in_progress", "success"]
    assert metrics.FEEDBACK.labels("github", "rate_limited")._value.get() == before + 1


def test_a_restart_continues_the_same_deployment(gh: World, github: FakeGitHub):
    """The deployment was created but its id never recorded (a crash, or a new leader with a
    fresh status database): the next update finds it by commit and environment."""
    gh.repo.write("pr45", with_commit(45, SHA1))
    gh.reconciler.run_pass()
    feedback = gh.reconciler.feedback
    (in_progress, _) = gh.store.outbox_pending("github")
    github_target = feedback.targets[0]
    from controller.hosts import Update

    github_target.deliver(Update(**json.loads(in_progress.payload)), feedback.memory)
    gh.store.outbox_done(in_progress.id)
    gh.store.update("pr45", deployment_id="", deployment_commit="")
    assert feedback.drain()
    assert len(github.deployments) == 1
    assert github.states("pr45") == ["in_progress", "success"]
    assert gh.store.load("pr45").deployment_id == str(github.deployments[0]["id"])


def test_a_wrong_token_is_logged_once_counted_and_changes_nothing_else(
    tmp_path, repo, aws, toolchain, demo_worker, github: FakeGitHub, capsys
):
    """401 Bad credentials: the environment is still applied; one log line (without the token)
    however often it is retried; each failure counted."""
    wrong = "ghp_wrongwrongwrongwrong0000"
    for world in github_world(tmp_path, repo, aws, toolchain, demo_worker, github, wrong):
        before = metrics.FEEDBACK.labels("github", "auth")._value.get()
        with structlog.testing.capture_logs() as logs:
            world.repo.write("pr46", with_commit(46, SHA1))
            assert world.reconciler.run_pass().outcomes == {"pr46": "applied"}
            assert world.phase("pr46") == Phase.READY.value
            for _ in range(4):
                assert not world.reconciler.feedback.drain(timeout=0.2)
                world.now[0] += 3600
        auth = [e for e in logs if e["event"] == "feedback_auth_failed"]
        assert len(auth) == 1
        assert "401" in auth[0]["error"] and "ENVCTL_GITHUB_TOKEN" in auth[0]["error"]
        assert wrong not in json.dumps(logs, default=str)
        assert metrics.FEEDBACK.labels("github", "auth")._value.get() >= before + 4
        assert github.deployments == []
    assert wrong not in capsys.readouterr().out


def test_the_web_address_of_github_and_of_an_enterprise_server():
    """api.github.com -> github.com; https://ghe.example.com/api/v3 -> https://ghe.example.com."""
    from controller.hosts import github_web_url

    assert github_web_url("https://api.github.com/") == "https://github.com"
    assert github_web_url("https://ghe.example.com/api/v3") == "https://ghe.example.com"


def test_a_github_app_and_stalled_and_persistent_opt_in(
    tmp_path, repo, aws, toolchain, demo_worker, github: FakeGitHub
):
    """A GitHub App (JWT -> installation token) instead of a token; `deployments: all` reports a
    persistent environment (not transient); a Stalled apply shows as `error`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    github.app = (4242, 77, public.decode())
    app = {"deployments": "all", "app_id": 4242, "installation_id": 77, "private_key_file": str(pem)}
    for world in github_world(tmp_path, repo, aws, toolchain, demo_worker, github, None, **app):
        world.repo.write("staging", {"kind": "persistent", "commit": SHA1})
        world.repo.write("pr47", with_commit(47, SHA2, sleep_seconds=-1))
        assert world.reconciler.run_pass().outcomes == {"pr47": "failed", "staging": "applied"}
        assert world.phase("pr47") == "Stalled"
        assert world.reconciler.feedback.drain()
    assert any(r["path"] == "/app/installations/77/access_tokens" for r in github.requests)
    staging = next(d for d in github.deployments if d["environment"] == "staging")
    assert (staging["transient_environment"], staging["production_environment"]) == (False, False)
    assert github.states("staging") == ["in_progress", "success"]
    assert github.states("pr47")[-1] == "error"
    pr47 = next(d for d in github.deployments if d["environment"] == "pr47")
    assert "StackRejected" in github.statuses[pr47["id"]][-1]["description"]


def test_the_daemon_delivers_from_its_own_worker_and_status_shows_the_link(
    tmp_path, repo, aws, toolchain, github: FakeGitHub
):
    """`envctl run` with a github section: its worker thread delivers while the daemon runs; the
    token comes from ENVCTL_GITHUB_TOKEN and never reaches the log; `status NAME` links it."""
    from tests.integration.test_cli import envctl, setup
    from tests.integration.test_daemon import start_daemon, stop_daemon, wait_for

    _, config = setup(
        tmp_path, repo, aws, toolchain, github={"repository": github.repository, "api_url": github.url}
    )
    repo.write("pr48", with_commit(48, SHA1))
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log, ENVCTL_GITHUB_TOKEN=TOKEN)
    try:
        wait_for(lambda: github.states("pr48") == ["in_progress", "success"], timeout=120)
        shown = envctl("status", "pr48", config=config)
        assert f"deployment:         {github.url}/{github.repository}/deployments/pr48" in shown.stdout
    finally:
        stop_daemon(proc, log)
    assert TOKEN not in log.read_text()
    assert '"event": "feedback_delivered"' in log.read_text()
