"""Previews shown in the application's GitLab project: an environment with its URL, a deployment
per commit with its status, the environment stopped on destroy; against a local GitLab that
checks every request against the documented fields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from controller.settings import Secrets
from tests.integration.conftest import World, build_world, make_settings, preview
from tests.integration.fake_gitlab import FakeGitLab, fake_gitlab

TOKEN = "glpat-envctltesttoken012345"
SHA1 = "c3" * 20
SHA2 = "d4" * 20


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    yield from fake_gitlab(TOKEN)


@pytest.fixture
def gl(tmp_path, repo, aws, toolchain, demo_worker, gitlab) -> Iterator[World]:
    settings = make_settings(
        tmp_path,
        repo,
        aws,
        toolchain,
        gitlab={
            "project": gitlab.project,
            "url": gitlab.url,
            "url_template": "https://{name}.preview.example.com",
        },
    )
    settings = replace(settings, secrets=Secrets(gitlab_token=TOKEN, values=(TOKEN,)))
    for world in build_world(settings, repo, aws, demo_worker):
        world.reconciler.feedback.clock = lambda now=world.now: now[0]
        yield world


def test_a_preview_is_an_environment_with_a_deployment_per_commit(gl: World, gitlab: FakeGitLab):
    """Apply: the environment (external URL) and a running deployment, then success; a new
    commit: a new deployment; a failing apply: failed; closed: the environment is stopped."""
    gitlab.merge_requests[51] = (SHA1, "feature/checkout")
    gl.repo.write("pr51", preview(51))
    assert gl.reconciler.run_pass().outcomes == {"pr51": "applied"}
    assert gl.reconciler.feedback.drain()
    (environment,) = gitlab.environments
    assert environment["name"] == "pr51"
    assert environment["external_url"] == "https://pr51.preview.example.com"
    assert gitlab.statuses("pr51") == [(SHA1, "running"), (SHA1, "success")]
    (deployment,) = gitlab.deployments
    assert deployment["ref"] == "feature/checkout"
    record = gl.store.load("pr51")
    assert record.deployment_id == str(deployment["id"])
    assert record.deployment_url == f"{gitlab.url}/{gitlab.project}/-/environments/{environment['id']}"

    gl.repo.write("pr51", {**preview(51, fail="quota"), "commit": SHA2})
    assert gl.reconciler.run_pass().outcomes == {"pr51": "failed"}
    assert gl.reconciler.feedback.drain()
    assert gitlab.statuses("pr51")[2:] == [(SHA2, "running"), (SHA2, "failed")]

    gl.repo.write("pr51", {**preview(51, state="closed", fail="quota"), "commit": SHA2})
    assert gl.reconciler.run_pass().outcomes == {"pr51": "destroyed"}
    assert gl.reconciler.feedback.drain()
    assert gitlab.environments[0]["state"] == "stopped"
    assert all(r["method"] != "DELETE" for r in gitlab.requests)


def test_a_gitlab_outage_is_retried_without_blocking(gl: World, gitlab: FakeGitLab):
    """The project cannot be reached (wrong token): the apply still finishes; nothing is lost."""
    gitlab.token = "rotated"
    gitlab.merge_requests[52] = (SHA1, "fix")
    gl.repo.write("pr52", preview(52))
    assert gl.reconciler.run_pass().outcomes == {"pr52": "applied"}
    assert not gl.reconciler.feedback.drain(timeout=0.3)
    assert len(gl.store.outbox_pending("gitlab")) == 2
    gitlab.token = TOKEN
    gl.now[0] += 3600
    assert gl.reconciler.feedback.drain()
    assert gitlab.statuses("pr52") == [(SHA1, "running"), (SHA1, "success")]
