"""The shape of envctl.yaml: a pydantic model (pydantic dataclasses, strict), one class per section.

Types, unknown and missing settings are pydantic's to check, and its JSON
Schema is shipped (`envctl.schema.json`); controller.settings reads a file into
it and controller.settings_rules checks what types cannot say.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from controller.secrets import Secrets

_MODEL = ConfigDict(strict=True, extra="forbid", use_attribute_docstrings=True)
"""Strict types (no "5" for 5, no 1 for true) and no unknown settings."""
Text = Annotated[str, Field(min_length=1)]
"""A string setting: never empty."""


@dataclass(frozen=True, config=_MODEL)
class RepositorySettings:
    """The environments repository."""

    url: Text
    """Git URL or local path of the repository."""
    branch: Text = "main"
    """Branch whose head is the desired state."""
    path: Text = "environments"
    """Folder of the environment files inside the repository."""
    poll_seconds: int = 60
    """How often `envctl run` fetches."""


@dataclass(frozen=True, config=_MODEL)
class StateSettings:
    """Where every environment's Terraform state lives."""

    bucket: Text = "envctl-state"
    """S3 bucket of the state objects."""
    region: Text = "us-east-1"
    """Region of the bucket (and default region of environments)."""
    key_prefix: Text = "envctl"
    """State key = {key_prefix}/{name}/terraform.tfstate."""
    lock: Text = "dynamodb"
    """`dynamodb` (lock table, any Terraform) or `s3` (use_lockfile, Terraform >= 1.10)."""
    lock_table: Text = "envctl-locks"
    """DynamoDB lock table for `lock: dynamodb`."""
    endpoint: Text | None = None
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


@dataclass(frozen=True, config=_MODEL)
class TerraformSettings:
    """How Terraform is run."""

    binary: Text = "terraform"
    """Path or name of the terraform binary."""
    cli_config_file: Text | None = None
    """TF_CLI_CONFIG_FILE for every run (provider mirrors, credentials)."""
    concurrency: int = 4
    """Environments worked on at once."""
    timeout_seconds: int = 3600
    """A run taking longer is interrupted, then killed."""
    lock_timeout_seconds: int = 300
    """-lock-timeout: how long to wait for a state lock held elsewhere."""
    grace_seconds: int = 120
    """On shutdown, how long running Terraform gets to save state and release locks."""
    plugin_cache_dir: Text | None = None
    """Shared provider cache; default {workdir}/plugin-cache."""


@dataclass(frozen=True, config=_MODEL)
class SafetySettings:
    """Guards against mass destruction."""

    max_destroys_per_pass: int = 5
    """A pass that would start more destroys than this holds every new one until confirmed."""
    max_destroys_per_hour: int = 20
    """Destroys started in the last hour plus a pass's new ones over this: the new ones are held
    (a mass deletion spread over many commits). Confirmed destroys do not count against either."""


@dataclass(frozen=True, config=_MODEL)
class RetrySettings:
    """Backoff of failed environments: base * 2^(failures-1), jittered, capped."""

    base_seconds: float = 30.0
    max_seconds: float = 3600.0


@dataclass(frozen=True, config=_MODEL)
class SynthSettings:
    """The warm synth worker."""

    max_synths: int = 200
    """Recycle the worker after this many synths."""
    max_rss_mb: int = 3072
    """Recycle the worker when its resident memory exceeds this."""
    timeout_seconds: int = 300
    """A synth (first one includes importing the bindings) taking longer fails."""


@dataclass(frozen=True, config=_MODEL)
class DriftSettings:
    """Scheduled drift checks."""

    interval_minutes: float = 30.0
    """Default interval between checks of one environment (an environment file may override)."""
    min_interval_minutes: float = 5.0
    """The shortest interval an environment file may ask for (each check is a refreshing plan)."""
    jitter_fraction: float = 0.1
    """Checks are spread by up to this fraction of the interval."""


@dataclass(frozen=True, config=_MODEL)
class WebhookSettings:
    """A JSON POST per alert (Slack-compatible `text` plus structured fields)."""

    url: str = ""
    """Where alerts are POSTed; ENVCTL_ALERT_WEBHOOK_URL (a Secret) overrides it: a Slack
    incoming webhook's URL is a credential, and the settings file is not a secret."""
    timeout_seconds: float = 5.0
    attempts: int = 3
    """Deliveries tried per alert, with exponential backoff between them."""


@dataclass(frozen=True, config=_MODEL)
class HookSettings:
    """The AWS calls envctl makes around a stack's Terraform runs (see controller.hooks)."""

    endpoint: Text | None = None
    """AWS API endpoint for those calls (the local sandbox's); None: AWS itself."""
    quota_check: bool = True
    """Check VPC and Elastic IP headroom before creating an environment."""
    cleanup_timeout_seconds: float = 600.0
    """How long a destroy waits for leftover load balancers and security groups to go."""


@dataclass(frozen=True, config=_MODEL)
class SnsSettings:
    """An Amazon SNS topic per alert."""

    topic_arn: Text
    region: str = "us-east-1"
    endpoint: Text | None = None


@dataclass(frozen=True, config=_MODEL)
class AlertSettings:
    """Where alerts go besides the log."""

    webhook: WebhookSettings | None = None
    sns: SnsSettings | None = None
    realert_hours: float = 24.0
    """A persisting drift is re-sent after this long."""


@dataclass(frozen=True, config=_MODEL)
class PreviewSettings:
    """Expiry of forgotten previews."""

    ttl: Text | None = None
    """Default TTL of previews (e.g. 72h); none: previews do not expire unless their file says so."""
    expiry_warning: Text = "6h"
    """How long before expiry the warning goes out."""
    max_ttl: Text = "30d"
    """The longest `ttl` an environment file may set."""


@dataclass(frozen=True, config=_MODEL)
class ApiSettings:
    """The HTTP server inside `envctl run`."""

    host: Text = "127.0.0.1"
    """Address to listen on (0.0.0.0 in a pod)."""
    port: int = 8080
    """Port to listen on; 0 picks a free one (logged)."""
    source_failure_seconds: float = 600.0
    """Not ready once fetching has failed for longer than this."""
    webhooks: bool = False
    """Accept git webhooks at /hooks/github and /hooks/gitlab; needs ENVCTL_WEBHOOK_SECRET."""
    public_url: Text | None = None
    """Where people reach the status page (deployment statuses link an environment's page there)."""
    anonymous_read: bool = False
    """Status pages and status JSON without a token (the operating routes still need one)."""
    allowed_hosts: tuple[Text, ...] = ()
    """Host header values the API and pages answer, besides the bind address, localhost and the
    public_url's and advertised URL's hosts (the chart adds its Service names). Others get 421."""


@dataclass(frozen=True, kw_only=True, config=_MODEL)
class HostFeedback:
    """What GitHub and GitLab feedback share: which environments, under what name, at what URL."""

    environment_prefix: str = ""
    """Prefix of the host's environment names (`<prefix><name>`)."""
    deployments: Text = "previews"
    """`previews`, or `all` to report persistent environments too."""
    url_template: Text | None = None
    """The environment URL when the stack has no `environment_url` output, e.g. https://{name}.example.com."""


@dataclass(frozen=True, kw_only=True, config=_MODEL)
class GitHubSettings(HostFeedback):
    """Deployments on the application repository's pull requests (ENVCTL_GITHUB_TOKEN, or an App)."""

    repository: Text
    """owner/name of the application repository the previews belong to."""
    api_url: Text = "https://api.github.com"
    """https://<host>/api/v3 for GitHub Enterprise Server."""
    app_id: int | None = None
    """A GitHub App instead of a token: its id, installation and private key file."""
    installation_id: int | None = None
    private_key_file: Text | None = None


@dataclass(frozen=True, kw_only=True, config=_MODEL)
class GitLabSettings(HostFeedback):
    """Environments and deployments of the application's GitLab project (ENVCTL_GITLAB_TOKEN)."""

    project: Text
    """group/name of the application project."""
    url: Text = "https://gitlab.com"


@dataclass(frozen=True, config=_MODEL)
class LeaderSettings:
    """Leader election in DynamoDB: one replica acts, the others serve the API."""

    table: Text = "envctl-leases"
    """DynamoDB table with a string hash key `name`."""
    lease_seconds: float = 15.0
    """A leader that stops renewing loses the lease after this long."""
    name: Text = "envctl"
    """The lease's name; replicas of one deployment share it."""
    advertise_url: Text | None = None
    """Where the other replicas reach this one's API: followers forward status requests and
    webhooks to the leader's. Default: $ENVCTL_ADVERTISE_URL, else http://<api.host, or this
    host's address when api.host is a wildcard>:<api port>."""


@dataclass(frozen=True, config=_MODEL)
class Settings:
    """Everything envctl needs, validated."""

    repository: RepositorySettings
    workdir: Path = Path(".envctl")
    """Clone, synthesized stacks, Terraform dirs and the status database."""
    stack: Text = "stack.app:build"
    """`module:callable` building the stack of one environment."""
    stack_parameters: dict[str, Any] = field(default_factory=dict)
    """Defaults for every environment's `parameters` (an environment's own values win, except for
    `locked_parameters`)."""
    kind_parameters: dict[str, Any] = field(default_factory=dict)
    """Per kind (`preview`, `persistent`), stack parameters over stack_parameters: above all a
    deploy_role_arn per kind, so a preview's run cannot touch a persistent environment."""
    locked_parameters: tuple[Text, ...] = (
        "cluster_admin_arns",
        "public_access_cidrs",
        "deploy_role_arn",
        "permissions_boundary_arn",
    )
    """Stack parameters only the platform team sets (here, in stack_parameters): an environment
    file that sets one is Invalid. Who administers clusters, who reaches their API and which role
    deploys are not for a repository anyone can write to."""
    default_region: Text = "us-east-1"
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
    source_file: Text = "<defaults>"
    """Where these settings came from, for messages."""
    secrets: SkipJsonSchema[Secrets] = field(default_factory=Secrets)
    """From the environment, never the file (see `secrets_from`)."""
