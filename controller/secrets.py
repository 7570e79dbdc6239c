"""envctl's own secrets, read once from the environment (never from the settings file).

Tokens, webhook secrets and git credentials; `*_FILE` variants read a mounted
Secret. Every value found is handed to the redactors; none reaches Terraform.
"""

from __future__ import annotations

import typing
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from controller.errors import SettingsError

SECRET_VARIABLES = (
    "ENVCTL_API_TOKEN",
    "ENVCTL_API_READ_TOKEN",
    "ENVCTL_WEBHOOK_SECRET",
    "ENVCTL_GITHUB_WEBHOOK_SECRET",
    "ENVCTL_GITLAB_WEBHOOK_SECRET",
    "ENVCTL_ALERT_WEBHOOK_URL",
    "ENVCTL_GITHUB_TOKEN",
    "ENVCTL_GITLAB_TOKEN",
    "GIT_PASSWORD",
    "GIT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
"""Variables whose values are secrets: redacted from every log line and Terraform output line."""
GIT_TOKEN_USERNAME = "x-access-token"  # noqa: S105 - a user name, not a secret
"""The user name sent with GIT_TOKEN when GIT_USERNAME is unset (GitHub's; GitLab accepts any)."""


@dataclass(frozen=True)
class GitCredentials:
    """HTTP(S) credentials for the environments repository; never written to disk or logged."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Secrets:
    """envctl's own secrets, read once from the environment; never passed to Terraform."""

    webhook: str | None = field(default=None, repr=False)
    """ENVCTL_GITHUB_WEBHOOK_SECRET (or the older ENVCTL_WEBHOOK_SECRET): GitHub's HMAC key."""
    gitlab_webhook: str | None = field(default=None, repr=False)
    """ENVCTL_GITLAB_WEBHOOK_SECRET: the token GitLab sends (in clear) with each delivery."""
    github_token: str | None = field(default=None, repr=False)
    """ENVCTL_GITHUB_TOKEN: creates deployments on the application repository."""
    gitlab_token: str | None = field(default=None, repr=False)
    """ENVCTL_GITLAB_TOKEN: manages the application project's environments."""
    git: GitCredentials | None = None
    """GIT_USERNAME + GIT_PASSWORD, or GIT_TOKEN (with GIT_USERNAME or x-access-token)."""
    api_token: str | None = field(default=None, repr=False)
    """ENVCTL_API_TOKEN (or ENVCTL_API_TOKEN_FILE): every API route (plan, drift, synth, status)."""
    api_read_token: str | None = field(default=None, repr=False)
    """ENVCTL_API_READ_TOKEN (or _FILE): status JSON and pages only."""
    values: tuple[str, ...] = field(default=(), repr=False)
    """Every secret value present, for the redactors."""


def secrets_from(environ: typing.Mapping[str, str]) -> Secrets:
    """The secrets in `environ`; GIT_PASSWORD without GIT_USERNAME is an error naming both."""
    username = environ.get("GIT_USERNAME") or ""
    password = environ.get("GIT_PASSWORD") or ""
    token = environ.get("GIT_TOKEN") or ""
    git = None
    if password:
        if not username:
            raise SettingsError("GIT_PASSWORD is set but GIT_USERNAME is not; set both, or GIT_TOKEN alone")
        git = GitCredentials(username, password)
    elif token:
        git = GitCredentials(username or GIT_TOKEN_USERNAME, token)
    api_token = secret(environ, "ENVCTL_API_TOKEN")
    api_read_token = secret(environ, "ENVCTL_API_READ_TOKEN")
    if api_token and api_token == api_read_token:
        raise SettingsError("ENVCTL_API_TOKEN and ENVCTL_API_READ_TOKEN are the same; give each role its own")
    github_webhook = (
        environ.get("ENVCTL_GITHUB_WEBHOOK_SECRET") or environ.get("ENVCTL_WEBHOOK_SECRET") or None
    )
    gitlab_webhook = environ.get("ENVCTL_GITLAB_WEBHOOK_SECRET") or None
    if github_webhook and github_webhook == gitlab_webhook:
        raise SettingsError(
            "ENVCTL_GITLAB_WEBHOOK_SECRET is GitHub's webhook secret too; GitLab sends its token in clear "
            "with every delivery, so it must not be the key of GitHub's signatures: give each its own"
        )
    return Secrets(
        webhook=github_webhook,
        gitlab_webhook=gitlab_webhook,
        github_token=environ.get("ENVCTL_GITHUB_TOKEN") or None,
        gitlab_token=environ.get("ENVCTL_GITLAB_TOKEN") or None,
        git=git,
        api_token=api_token,
        api_read_token=api_read_token,
        # Tokens read from files are secrets too, for the redactors.
        values=tuple(
            dict.fromkeys(secret_values(environ) + tuple(t for t in (api_token, api_read_token) if t))
        ),
    )


def secret(environ: typing.Mapping[str, str], name: str) -> str | None:
    """`name`'s value, or the content of the file `name`_FILE names (a mounted Secret); not both."""
    value = environ.get(name) or None
    path = environ.get(f"{name}_FILE") or None
    if value and path:
        raise SettingsError(f"{name} and {name}_FILE are both set; set one")
    if path is None:
        return value
    try:
        text = Path(path).read_text().strip()
    except OSError as error:
        raise SettingsError(f"{name}_FILE: {path!r} cannot be read ({error.strerror})") from None
    if not text:
        raise SettingsError(f"{name}_FILE: {path!r} is empty; expected the secret")
    return text


def secret_values(environ: typing.Mapping[str, str]) -> tuple[str, ...]:
    """The values of every SECRET_VARIABLES entry set in `environ`."""
    return tuple(value for name in SECRET_VARIABLES if (value := environ.get(name)))


def known_values(secrets: Iterable[str]) -> list[str]:
    """The secret values worth masking (4+ characters), longest first (a value inside another)."""
    return sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)


def mask(text: str, values: list[str]) -> str:
    """`text` with every one of `values` (from known_values) replaced by ***."""
    for value in values:
        text = text.replace(value, "***")
    return text


def split_url_credentials(url: str) -> tuple[str, GitCredentials | None]:
    """An http(s) URL without its `user:password@` (or `token@`), and those credentials; other URLs
    as they are. The one place credentials are taken out of a URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    username = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    given = GitCredentials(username, password) if password else GitCredentials(GIT_TOKEN_USERNAME, username)
    return clean, given
