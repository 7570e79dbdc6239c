"""The settings file and environment variables, validated once at start into frozen dataclasses.

Every error names the file, the field, the value and what is allowed, so a bad
deployment fails at start with one clear line instead of at the first pass.
"""

from __future__ import annotations

import os
import re
import types
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from controller.errors import SettingsError

_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d")
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_RULE = "a duration such as 90m, 48h or 7d"


def parse_duration(value: object) -> float | None:
    """`48h` -> 172800.0; None when the value is not a duration."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class RepositorySettings:
    """The environments repository."""

    url: str
    """Git URL or local path of the repository."""
    branch: str = "main"
    """Branch whose head is the desired state."""
    path: str = "environments"
    """Folder of the environment files inside the repository."""
    poll_seconds: int = 60
    """How often `envctl run` fetches."""


@dataclass(frozen=True)
class StateSettings:
    """Where every environment's Terraform state lives."""

    bucket: str = "envctl-state"
    """S3 bucket of the state objects."""
    region: str = "us-east-1"
    """Region of the bucket (and default region of environments)."""
    key_prefix: str = "envctl"
    """State key = {key_prefix}/{name}/terraform.tfstate."""
    lock: str = "dynamodb"
    """`dynamodb` (lock table, any Terraform) or `s3` (use_lockfile, Terraform >= 1.10)."""
    lock_table: str = "envctl-locks"
    """DynamoDB lock table for `lock: dynamodb`."""
    endpoint: str | None = None
    """S3/DynamoDB endpoint for an S3-compatible store or the local sandbox."""

    def key(self, name: str) -> str:
        """The state key of one environment."""
        return f"{self.folder(name)}terraform.tfstate"

    def inventory_key(self, name: str) -> str:
        """The key of the inventory entry envctl keeps next to one environment's state."""
        return f"{self.folder(name)}envctl.json"

    def config_key(self, name: str) -> str:
        """The configuration of one environment's last successful apply (its destroy runs with it)."""
        return f"{self.folder(name)}envctl-config.tf.json"

    def errored_state_key(self, name: str) -> str:
        """A state Terraform could not upload, kept until it is pushed."""
        return f"{self.folder(name)}errored.tfstate"

    def folder(self, name: str = "") -> str:
        """The key prefix of one environment's objects, or of all of them when name is empty."""
        prefix = self.key_prefix.strip("/")
        parts = [part for part in (prefix, name) if part]
        return "".join(f"{part}/" for part in parts)


@dataclass(frozen=True)
class TerraformSettings:
    """How Terraform is run."""

    binary: str = "terraform"
    """Path or name of the terraform binary."""
    cli_config_file: str | None = None
    """TF_CLI_CONFIG_FILE for every run (provider mirrors, credentials)."""
    concurrency: int = 4
    """Environments worked on at once."""
    timeout_seconds: int = 3600
    """A run taking longer is interrupted, then killed."""
    lock_timeout_seconds: int = 300
    """-lock-timeout: how long to wait for a state lock held elsewhere."""
    grace_seconds: int = 120
    """On shutdown, how long running Terraform gets to save state and release locks."""
    plugin_cache_dir: str | None = None
    """Shared provider cache; default {workdir}/plugin-cache."""


@dataclass(frozen=True)
class SafetySettings:
    """Guards against mass destruction."""

    max_destroys_per_pass: int = 5
    """A pass that would start more destroys than this holds every new one until confirmed."""
    max_destroys_per_hour: int = 20
    """Destroys started in the last hour plus a pass's new ones over this: the new ones are held
    (a mass deletion spread over many commits). Confirmed destroys do not count against either."""


@dataclass(frozen=True)
class RetrySettings:
    """Backoff of failed environments: base * 2^(failures-1), jittered, capped."""

    base_seconds: float = 30.0
    max_seconds: float = 3600.0


@dataclass(frozen=True)
class SynthSettings:
    """The warm synth worker."""

    max_synths: int = 200
    """Recycle the worker after this many synths."""
    max_rss_mb: int = 3072
    """Recycle the worker when its resident memory exceeds this."""
    timeout_seconds: int = 300
    """A synth (first one includes importing the bindings) taking longer fails."""


@dataclass(frozen=True)
class DriftSettings:
    """Scheduled drift checks."""

    interval_minutes: float = 30.0
    """Default interval between checks of one environment (an environment file may override)."""
    min_interval_minutes: float = 5.0
    """The shortest interval an environment file may ask for (each check is a refreshing plan)."""
    jitter_fraction: float = 0.1
    """Checks are spread by up to this fraction of the interval."""


@dataclass(frozen=True)
class WebhookSettings:
    """A JSON POST per alert (Slack-compatible `text` plus structured fields)."""

    url: str = ""
    """Where alerts are POSTed; ENVCTL_ALERT_WEBHOOK_URL (a Secret) overrides it: a Slack
    incoming webhook's URL is a credential, and the settings file is not a secret."""
    timeout_seconds: float = 5.0
    attempts: int = 3
    """Deliveries tried per alert, with exponential backoff between them."""


@dataclass(frozen=True)
class HookSettings:
    """The AWS calls envctl makes around a stack's Terraform runs (see controller.hooks)."""

    endpoint: str | None = None
    """AWS API endpoint for those calls (the local sandbox's); None: AWS itself."""
    quota_check: bool = True
    """Check VPC and Elastic IP headroom before creating an environment."""
    cleanup_timeout_seconds: float = 600.0
    """How long a destroy waits for leftover load balancers and security groups to go."""


@dataclass(frozen=True)
class SnsSettings:
    """An Amazon SNS topic per alert."""

    topic_arn: str
    region: str = "us-east-1"
    endpoint: str | None = None


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go besides the log."""

    webhook: WebhookSettings | None = None
    sns: SnsSettings | None = None
    realert_hours: float = 24.0
    """A persisting drift is re-sent after this long."""


@dataclass(frozen=True)
class PreviewSettings:
    """Expiry of forgotten previews."""

    ttl: str | None = None
    """Default TTL of previews (e.g. 72h); none: previews do not expire unless their file says so."""
    expiry_warning: str = "6h"
    """How long before expiry the warning goes out."""
    max_ttl: str = "30d"
    """The longest `ttl` an environment file may set."""


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP server inside `envctl run`."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 in a pod)."""
    port: int = 8080
    """Port to listen on; 0 picks a free one (logged)."""
    source_failure_seconds: float = 600.0
    """Not ready once fetching has failed for longer than this."""
    webhooks: bool = False
    """Accept git webhooks at /hooks/github and /hooks/gitlab; needs ENVCTL_WEBHOOK_SECRET."""
    public_url: str | None = None
    """Where people reach the status page (deployment statuses link an environment's page there)."""
    anonymous_read: bool = False
    """Status pages and status JSON without a token (the operating routes still need one)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header values the API and pages answer, besides the bind address, localhost and the
    public_url's and advertised URL's hosts (the chart adds its Service names). Others get 421."""


DEPLOYMENT_KINDS = ("previews", "all")


@dataclass(frozen=True, kw_only=True)
class HostFeedback:
    """What GitHub and GitLab feedback share: which environments, under what name, at what URL."""

    environment_prefix: str = ""
    """Prefix of the host's environment names (`<prefix><name>`)."""
    deployments: str = "previews"
    """`previews`, or `all` to report persistent environments too."""
    url_template: str | None = None
    """The environment URL when the stack has no `environment_url` output, e.g. https://{name}.example.com."""


@dataclass(frozen=True, kw_only=True)
class GitHubSettings(HostFeedback):
    """Deployments on the application repository's pull requests (ENVCTL_GITHUB_TOKEN, or an App)."""

    repository: str
    """owner/name of the application repository the previews belong to."""
    api_url: str = "https://api.github.com"
    """https://<host>/api/v3 for GitHub Enterprise Server."""
    app_id: int | None = None
    """A GitHub App instead of a token: its id, installation and private key file."""
    installation_id: int | None = None
    private_key_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class GitLabSettings(HostFeedback):
    """Environments and deployments of the application's GitLab project (ENVCTL_GITLAB_TOKEN)."""

    project: str
    """group/name of the application project."""
    url: str = "https://gitlab.com"


@dataclass(frozen=True)
class LeaderSettings:
    """Leader election in DynamoDB: one replica acts, the others serve the API."""

    table: str = "envctl-leases"
    """DynamoDB table with a string hash key `name`."""
    lease_seconds: float = 15.0
    """A leader that stops renewing loses the lease after this long."""
    name: str = "envctl"
    """The lease's name; replicas of one deployment share it."""
    advertise_url: str | None = None
    """Where the other replicas reach this one's API: followers forward status requests and
    webhooks to the leader's. Default: $ENVCTL_ADVERTISE_URL, else http://<api.host, or this
    host's address when api.host is a wildcard>:<api port>."""


# --- secrets from the environment ---------------------------------------------------------------

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


@dataclass(frozen=True)
class Settings:
    """Everything envctl needs, validated."""

    repository: RepositorySettings
    workdir: Path = Path(".envctl")
    """Clone, synthesized stacks, Terraform dirs and the status database."""
    stack: str = "stack.app:build"
    """`module:callable` building the stack of one environment."""
    stack_parameters: dict[str, Any] = field(default_factory=dict)
    """Defaults for every environment's `parameters` (an environment's own values win, except for
    `locked_parameters`)."""
    kind_parameters: dict[str, Any] = field(default_factory=dict)
    """Per kind (`preview`, `persistent`), stack parameters over stack_parameters: above all a
    deploy_role_arn per kind, so a preview's run cannot touch a persistent environment."""
    locked_parameters: tuple[str, ...] = (
        "cluster_admin_arns",
        "public_access_cidrs",
        "deploy_role_arn",
        "permissions_boundary_arn",
    )
    """Stack parameters only the platform team sets (here, in stack_parameters): an environment
    file that sets one is Invalid. Who administers clusters, who reaches their API and which role
    deploys are not for a repository anyone can write to."""
    default_region: str = "us-east-1"
    """Region of environments that name none."""
    state: StateSettings = field(default_factory=StateSettings)
    terraform: TerraformSettings = field(default_factory=TerraformSettings)
    safety: SafetySettings = field(default_factory=SafetySettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    synth: SynthSettings = field(default_factory=SynthSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    previews: PreviewSettings = field(default_factory=PreviewSettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    github: GitHubSettings | None = None
    """Report previews as deployments on the application repository's pull requests."""
    gitlab: GitLabSettings | None = None
    """Report previews as environments of the application's GitLab project."""
    api: ApiSettings | None = field(default_factory=ApiSettings)
    """None (`api: null`) turns the HTTP server off."""
    leader_election: LeaderSettings | None = None
    """Absent: this process always acts."""
    source_file: str = "<defaults>"
    """Where these settings came from, for messages."""
    secrets: Secrets = field(default_factory=Secrets)
    """From the environment, never the file (see `secrets_from`)."""


_NOT_IN_FILE = ("source_file", "secrets")


def defaults_for(settings: Settings, kind: str) -> dict[str, Any]:
    """The stack parameters the platform team gives an environment of `kind`."""
    given = settings.kind_parameters.get(kind) or {}
    return {**settings.stack_parameters, **given}


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a number"
    if kind is Path or kind is str:
        return "a string"
    return "a mapping"


def _convert(file: str, where: str, kind: Any, value: Any) -> Any:
    """Check one value against its annotation and convert it."""
    if isinstance(kind, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        kind = options[0]
    if is_dataclass(kind):
        return _build(file, where, kind, value)
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SettingsError(f"{file}: {where}: {value!r} is not allowed; expected a mapping")
        return dict(value)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise SettingsError(f"{file}: {where}: {value!r} is not allowed; expected a list of strings")
        return tuple(value)
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind in (str, Path) and isinstance(value, str) and value != "")
    )
    if not ok:
        raise SettingsError(f"{file}: {where}: {value!r} is not allowed; expected {_describe(kind)}")
    return kind(value) if kind in (Path, float) else value


def _build(file: str, where: str, cls: Any, raw: Any) -> Any:
    """Build a settings dataclass from a mapping, refusing unknown keys and missing required ones."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise SettingsError(f"{file}: {where or '(top level)'}: {raw!r} is not allowed; expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name not in _NOT_IN_FILE}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(
            f"{file}: {prefix}{unknown[0]}: unknown setting; expected one of {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for item in fields(cls):
        if item.name not in raw:
            if item.default is MISSING and item.default_factory is MISSING and item.name not in _NOT_IN_FILE:
                raise SettingsError(f"{file}: {prefix}{item.name}: missing; this setting is required")
            continue
        values[item.name] = _convert(file, f"{prefix}{item.name}", hints[item.name], raw[item.name])
    return cls(**values)


def _check(settings: Settings) -> None:  # noqa: PLR0912 - one check per setting
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
        if not _REGION.fullmatch(region):
            fail(where, region, "an AWS region name such as us-east-1")
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


def parse(raw: Any, source_file: str, base: Path | None = None) -> Settings:
    """Settings from already-loaded YAML data; relative paths resolve against `base`."""
    settings: Settings = _build(source_file, "", Settings, raw)
    base = base or Path.cwd()
    workdir = settings.workdir if settings.workdir.is_absolute() else base / settings.workdir
    terraform = settings.terraform
    if terraform.cli_config_file and not Path(terraform.cli_config_file).is_absolute():
        terraform = replace(terraform, cli_config_file=str(base / terraform.cli_config_file))
    github = settings.github
    if github is not None and github.private_key_file and not Path(github.private_key_file).is_absolute():
        github = replace(github, private_key_file=str(base / github.private_key_file))
    settings = replace(settings, workdir=workdir, terraform=terraform, github=github, source_file=source_file)
    _check(settings)
    return settings


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
    parts = urllib.parse.urlsplit(settings.repository.url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return settings
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    username = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    given = GitCredentials(username, password) if password else GitCredentials(GIT_TOKEN_USERNAME, username)
    secrets = replace(
        settings.secrets,
        git=settings.secrets.git or given,
        values=tuple(dict.fromkeys((*settings.secrets.values, given.password))),
    )
    return replace(settings, repository=replace(settings.repository, url=clean), secrets=secrets)
