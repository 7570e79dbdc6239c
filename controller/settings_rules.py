"""The settings' rules beyond their types: ranges, choices, shapes, and what must go together.

Each broken rule is one error naming the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from controller.errors import SettingsError

if TYPE_CHECKING:
    from controller.settings import Settings

_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d")
"""An AWS region name (the one rule; environments check theirs with it too)."""
REGION_RULE = "an AWS region name such as us-east-1"
DEPLOYMENT_KINDS = ("previews", "all")
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_RULE = "a duration such as 90m, 48h or 7d"


def parse_duration(value: object) -> float | None:
    """`48h` -> 172800.0; None when the value is not a duration."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check(settings: Settings) -> None:  # noqa: PLR0912 - one check per setting
    """Rules beyond types: ranges, choices, shapes."""
    file = settings.source_file

    def fail(where: str, value: object, allowed: str) -> typing.NoReturn:
        raise SettingsError(f"{file}: {where}: {value!r} is not allowed; expected {allowed}")

    for kind, given in settings.kind_parameters.items():
        if kind not in ("preview", "persistent"):
            fail(f"kind_parameters.{kind}", kind, "preview or persistent")
        if not isinstance(given, dict):
            fail(f"kind_parameters.{kind}", given, "a mapping of stack parameters")
    if not _ENTRY_POINT.fullmatch(settings.stack):
        fail("stack", settings.stack, '"module:callable", like stack.app:build')
    for where, region in (
        ("default_region", settings.default_region),
        ("state.region", settings.state.region),
    ):
        if not REGION.fullmatch(region):
            fail(where, region, REGION_RULE)
    if settings.state.lock not in ("dynamodb", "s3"):
        fail("state.lock", settings.state.lock, "dynamodb or s3")
    if settings.repository.path.startswith("/") or ".." in Path(settings.repository.path).parts:
        fail("repository.path", settings.repository.path, "a folder inside the repository")
    positive = {
        "repository.poll_seconds": settings.repository.poll_seconds,
        "terraform.concurrency": settings.terraform.concurrency,
        "terraform.timeout_seconds": settings.terraform.timeout_seconds,
        "synth.max_synths": settings.synth.max_synths,
        "synth.max_rss_mb": settings.synth.max_rss_mb,
        "synth.timeout_seconds": settings.synth.timeout_seconds,
        "retry.base_seconds": settings.retry.base_seconds,
        "drift.interval_minutes": settings.drift.interval_minutes,
        "drift.min_interval_minutes": settings.drift.min_interval_minutes,
        "alerts.realert_hours": settings.alerts.realert_hours,
    }
    for where, number in positive.items():
        if number <= 0:
            fail(where, number, "a number above 0")
    non_negative = {
        "terraform.lock_timeout_seconds": settings.terraform.lock_timeout_seconds,
        "terraform.grace_seconds": settings.terraform.grace_seconds,
        "safety.max_destroys_per_pass": settings.safety.max_destroys_per_pass,
        "safety.max_destroys_per_hour": settings.safety.max_destroys_per_hour,
    }
    for where, number in non_negative.items():
        if number < 0:
            fail(where, number, "0 or more")
    if settings.api is not None and not 0 <= settings.api.port <= 65535:
        fail("api.port", settings.api.port, "a port from 0 to 65535")
    if settings.leader_election is not None and settings.leader_election.lease_seconds < 3:
        fail("leader_election.lease_seconds", settings.leader_election.lease_seconds, "3 or more")
    advertise = settings.leader_election.advertise_url if settings.leader_election else None
    if advertise is not None and not re.fullmatch(r"https?://[^/\s]+/?", advertise):
        fail(
            "leader_election.advertise_url",
            advertise,
            "an http(s) URL with no path, e.g. http://10.0.3.7:8080",
        )
    if not 0 <= settings.drift.jitter_fraction < 1:
        fail("drift.jitter_fraction", settings.drift.jitter_fraction, "a fraction from 0 to below 1")
    for where, value in (
        ("previews.ttl", settings.previews.ttl),
        ("previews.expiry_warning", settings.previews.expiry_warning),
        ("previews.max_ttl", settings.previews.max_ttl),
    ):
        if value is not None and parse_duration(value) is None:
            fail(where, value, "a duration such as 90m, 48h or 7d")
    webhook = settings.alerts.webhook
    if webhook is not None and webhook.url and not re.match(r"^https?://[^/\s]+", webhook.url):
        fail("alerts.webhook.url", "(redacted)", "an http(s) URL")
    if webhook is not None and webhook.attempts < 1:
        fail("alerts.webhook.attempts", webhook.attempts, "1 or more")
    sns = settings.alerts.sns
    if sns is not None and not re.fullmatch(r"arn:aws[\w-]*:sns:[\w-]+:\d{12}:[\w-]+", sns.topic_arn):
        fail("alerts.sns.topic_arn", sns.topic_arn, "an SNS topic ARN")
    if settings.retry.max_seconds < settings.retry.base_seconds:
        fail("retry.max_seconds", settings.retry.max_seconds, "at least retry.base_seconds")
    public_url = settings.api.public_url if settings.api is not None else None
    if public_url is not None and not re.fullmatch(r"https?://[^\s]+", public_url):
        fail("api.public_url", public_url, "an http(s) URL, e.g. https://envctl.example.com")
    _check_hosts(settings, fail)


def _check_hosts(settings: Settings, fail: Callable[[str, object, str], typing.NoReturn]) -> None:  # noqa: PLR0912 - one check per setting
    """The git hosts' feedback settings: names, URLs, templates and credentials that fit together."""
    for section, host in (("github", settings.github), ("gitlab", settings.gitlab)):
        if host is None:
            continue
        if host.deployments not in DEPLOYMENT_KINDS:
            fail(f"{section}.deployments", host.deployments, "previews or all")
        if host.url_template is not None:
            try:
                url = host.url_template.format(name="pr1")
            except (KeyError, IndexError, ValueError):
                url = ""
            if not re.fullmatch(r"https?://[^\s]+", url):
                fail(f"{section}.url_template", host.url_template, "an http(s) URL using only {name}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]*", host.environment_prefix):
            fail(f"{section}.environment_prefix", host.environment_prefix, "letters, digits, '.', '_', '-'")
    github = settings.github
    if github is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", github.repository):
            fail("github.repository", github.repository, "owner/name of the application repository")
        if not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", github.api_url):
            fail("github.api_url", github.api_url, "an http(s) URL such as https://api.github.com")
        app = (github.app_id, github.installation_id, github.private_key_file)
        if any(v is not None for v in app) and not all(v is not None for v in app):
            fail("github.app_id", github.app_id, "app_id, installation_id and private_key_file together")
    gitlab = settings.gitlab
    if gitlab is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+", gitlab.project):
            fail("gitlab.project", gitlab.project, "group/name of the application project")
        if not re.fullmatch(r"https?://[^/\s]+/?", gitlab.url):
            fail("gitlab.url", gitlab.url, "an http(s) URL such as https://gitlab.com")
