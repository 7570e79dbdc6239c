"""The settings file and environment variables, validated once at start into frozen dataclasses.

The shape of `envctl.yaml` is a pydantic model (pydantic dataclasses, strict):
types, unknown and missing settings are pydantic's to check, and its JSON
Schema is shipped (`envctl.schema.json`). The rules beyond types live in
controller.settings_rules, the secrets from the environment in
controller.secrets. Every error names the file, the field, the value and what
is allowed, so a bad deployment fails at start with one clear line.
"""

from __future__ import annotations

import json
import os
import re
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from controller.errors import SettingsError
from controller.secrets import (
    SECRET_VARIABLES,
    GitCredentials,
    Secrets,
    secret,
    secret_values,
    secrets_from,
    split_url_credentials,
)
from controller.settings_model import (
    AlertSettings,
    ApiSettings,
    DriftSettings,
    GitHubSettings,
    GitLabSettings,
    HookSettings,
    HostFeedback,
    LeaderSettings,
    PreviewSettings,
    RepositorySettings,
    RetrySettings,
    SafetySettings,
    Settings,
    SnsSettings,
    StateSettings,
    SynthSettings,
    TerraformSettings,
    Text,
    WebhookSettings,
)
from controller.settings_rules import DEPLOYMENT_KINDS, DURATION_RULE, check, parse_duration

__all__ = [
    "DEPLOYMENT_KINDS",
    "DURATION_RULE",
    "SECRET_VARIABLES",
    "AlertSettings",
    "ApiSettings",
    "DriftSettings",
    "GitCredentials",
    "GitHubSettings",
    "GitLabSettings",
    "HookSettings",
    "HostFeedback",
    "LeaderSettings",
    "PreviewSettings",
    "RepositorySettings",
    "RetrySettings",
    "SafetySettings",
    "Secrets",
    "Settings",
    "SnsSettings",
    "StateSettings",
    "SynthSettings",
    "TerraformSettings",
    "Text",
    "WebhookSettings",
    "parse_duration",
    "secret",
    "secret_values",
    "secrets_from",
]
_NOT_IN_FILE = ("source_file", "secrets")


_NOT_IN_FILE = ("source_file", "secrets")
EXPECTED = {
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "string_too_short": "a string",
    "path_type": "a string",
    "tuple_type": "a list of strings",
    "list_type": "a list of strings",
}
"""What each pydantic error type expects, in envctl's words (anything else: a mapping)."""


def defaults_for(settings: Settings, kind: str) -> dict[str, Any]:
    """The stack parameters the platform team gives an environment of `kind`."""
    given = settings.kind_parameters.get(kind) or {}
    return {**settings.stack_parameters, **given}


def schema() -> dict[str, Any]:
    """The JSON Schema of envctl.yaml (shipped as envctl.schema.json)."""
    document: dict[str, Any] = TypeAdapter(Settings).json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "envctl.yaml"
    return document


def _known(loc: list[Any]) -> list[str]:
    """The settings a mapping at `loc` may hold."""
    cls: Any = Settings
    for name in loc:
        hint = typing.get_type_hints(cls)[name]
        options = [k for k in typing.get_args(hint) if is_dataclass(k)] or [hint]
        cls = options[0]
    return sorted(f.name for f in fields(cls) if f.name not in _NOT_IN_FILE)


def _at(raw: Any, loc: list[Any]) -> Any:
    for key in loc:
        raw = raw[key]
    return raw


def _problem(file: str, error: Any, raw: Any) -> str:
    """One pydantic error as envctl says it: file, field, value, what is allowed."""
    loc, kind = list(error["loc"]), error["type"]
    where = ".".join(map(str, loc))
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{file}: {where}: unknown setting; expected one of {', '.join(_known(loc[:-1]))}"
    if kind == "missing":
        return f"{file}: {where}: missing; this setting is required"
    expected = EXPECTED.get(kind, "a mapping")
    if loc and isinstance(loc[-1], int):
        # An item of a list: the list is what is not allowed.
        while loc and isinstance(loc[-1], int):
            loc.pop()
        expected = "a list of strings"
    where = ".".join(map(str, loc)) or "(top level)"
    return f"{file}: {where}: {_at(raw, loc)!r} is not allowed; expected {expected}"


def _validate(raw: Any, source_file: str) -> Settings:
    """The settings in `raw` (loaded YAML), or a SettingsError naming the first problem."""
    if isinstance(raw, dict):
        for name in sorted(set(raw) & set(_NOT_IN_FILE)):
            known = ", ".join(_known([]))
            raise SettingsError(f"{source_file}: {name}: unknown setting; expected one of {known}")
    try:
        # Through JSON: YAML's mappings and lists are what the strict model reads.
        document = json.dumps(raw)
    except (TypeError, ValueError) as error:
        raise SettingsError(
            f"{source_file}: {error}; settings are strings, numbers, true/false, lists and mappings"
        ) from None
    try:
        return TypeAdapter(Settings).validate_json(document)
    except ValidationError as error:
        problems = error.errors()
        # Unknown settings first: a misspelt name explains the "missing" one beside it.
        problems.sort(key=lambda e: e["type"] != "unexpected_keyword_argument")
        raise SettingsError(_problem(source_file, problems[0], raw)) from None


def parse(raw: Any, source_file: str, base: Path | None = None) -> Settings:
    """Settings from already-loaded YAML data; relative paths resolve against `base`."""
    settings = _validate(raw, source_file)
    base = base or Path.cwd()
    workdir = settings.workdir if settings.workdir.is_absolute() else base / settings.workdir
    terraform = settings.terraform
    if terraform.cli_config_file and not Path(terraform.cli_config_file).is_absolute():
        terraform = replace(terraform, cli_config_file=str(base / terraform.cli_config_file))
    github = settings.github
    if github is not None and github.private_key_file and not Path(github.private_key_file).is_absolute():
        github = replace(github, private_key_file=str(base / github.private_key_file))
    settings = replace(settings, workdir=workdir, terraform=terraform, github=github, source_file=source_file)
    check(settings)
    return settings


def check_host_credentials(settings: Settings) -> None:
    """At `envctl run`: a configured host without its credentials is an error naming both."""
    github = settings.github
    key = github.private_key_file if github is not None else None
    if key is not None and not os.access(key, os.R_OK):
        raise SettingsError(
            f"{settings.source_file}: github.private_key_file: {key!r} cannot be read; expected the "
            "GitHub App's private key (PEM), mounted where envctl runs"
        )
    if github is not None and github.app_id is None and not settings.secrets.github_token:
        raise SettingsError(
            f"{settings.source_file}: github: set ENVCTL_GITHUB_TOKEN (a token with deployments: write "
            "on the repository), or github.app_id, installation_id and private_key_file"
        )
    if settings.gitlab is not None and not settings.secrets.gitlab_token:
        raise SettingsError(
            f"{settings.source_file}: gitlab: set ENVCTL_GITLAB_TOKEN (a token with the api scope)"
        )


def config_path(explicit: str | None) -> Path:
    """--config, else $ENVCTL_CONFIG, else ./envctl.yaml."""
    return Path(explicit or os.environ.get("ENVCTL_CONFIG") or "envctl.yaml")


def load(path: Path) -> Settings:
    """Read and validate a settings file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise SettingsError(f"{path}: cannot be read: {error.strerror or error}") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML: {error}") from error
    settings = parse(raw if raw is not None else {}, str(path), path.resolve().parent)
    settings = with_alert_url(settings, os.environ.get("ENVCTL_ALERT_WEBHOOK_URL") or None)
    return with_url_credentials(replace(settings, secrets=secrets_from(os.environ)))


def with_alert_url(settings: Settings, url: str | None) -> Settings:
    """The alert webhook's URL from the environment (a Secret) over the file's, then checked."""
    webhook = settings.alerts.webhook
    if url is not None:
        webhook = replace(webhook or WebhookSettings(), url=url)
        settings = replace(settings, alerts=replace(settings.alerts, webhook=webhook))
    if webhook is not None and not re.match(r"^https?://[^/\s]+", webhook.url):
        raise SettingsError(
            f"{settings.source_file}: alerts.webhook.url: (redacted) is not allowed; expected an http(s) "
            "URL, here or in ENVCTL_ALERT_WEBHOOK_URL"
        )
    return settings


def with_url_credentials(settings: Settings) -> Settings:
    """Credentials written into repository.url are taken out of it, once, here: the URL is kept in
    the inventory, logs and alerts; the credentials become the git credentials (unless GIT_* are
    set) and a secret every redactor knows."""
    clean, given = split_url_credentials(settings.repository.url)
    if given is None:
        return settings
    secrets = replace(
        settings.secrets,
        git=settings.secrets.git or given,
        values=tuple(dict.fromkeys((*settings.secrets.values, given.password))),
    )
    return replace(settings, repository=replace(settings.repository, url=clean), secrets=secrets)
