"""The git hosts' APIs behind `controller.feedback`: GitHub (githubkit) and GitLab (python-gitlab).

Each target turns one `Update` into the host's calls and maps the host's
answers onto `Retry` (outage, rate limit with its Retry-After, bad
credentials) or `Rejected` (this update can never succeed). Tokens are given to
the clients only; no message carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from controller.settings import GitHubSettings, GitLabSettings

TIMEOUT_SECONDS = 10.0
USER_AGENT = "envctl"


@dataclass(frozen=True)
class Update:
    """One state of one environment, to be shown where its pull request is."""

    name: str
    kind: str
    state: str
    """in_progress, success, failure, error or inactive."""
    description: str
    pull_request: int | None
    commit: str
    environment_url: str
    log_url: str


class Retry(Exception):
    """The host cannot take the update now; try again after `after` seconds (None: backoff)."""

    def __init__(self, reason: str, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        """`unavailable`, `rate_limited` or `auth`: the metric label."""
        self.after = after


class Rejected(Exception):
    """The host refuses this update for good (no such pull request, a validation error)."""


def private_key(path: str | None) -> str:
    if not path:
        raise ValueError("github.private_key_file is required with github.app_id")
    return Path(path).read_text()


class Memory(Protocol):
    """Where the deployment of an environment is remembered (its status record)."""

    def deployment(self, name: str) -> tuple[str, str]:
        """(deployment id, commit) last used for `name`, or ("", "")."""

    def remember(self, name: str, deployment_id: str, commit: str, url: str) -> None: ...


# --- GitHub -------------------------------------------------------------------------------------


def github_web_url(api_url: str) -> str:
    """https://api.github.com -> https://github.com; https://ghe.example.com/api/v3 -> https://ghe.example.com."""
    base = api_url.rstrip("/")
    if base == "https://api.github.com":
        return "https://github.com"
    return base.removesuffix("/api/v3")


class GitHubTarget:
    """Deployments and deployment statuses of the application repository."""

    name = "github"

    def __init__(self, settings: GitHubSettings, token: str | None) -> None:
        self.settings = settings
        self.token = token
        self.owner, self.repo = settings.repository.split("/", 1)
        self.web = github_web_url(settings.api_url)

    @cached_property
    def client(self) -> Any:
        """Made on the first delivery: commands that never deliver neither import githubkit nor
        read the App's key (a key that cannot be read fails that delivery, retried, not the command)."""
        from githubkit import GitHub  # noqa: PLC0415 - only imported when GitHub is used

        auth: Any = self.token
        if self.settings.app_id is not None:
            from githubkit import AppInstallationAuthStrategy  # noqa: PLC0415

            auth = AppInstallationAuthStrategy(
                self.settings.app_id,
                private_key(self.settings.private_key_file),
                int(self.settings.installation_id or 0),
            )
        return GitHub(
            auth,
            base_url=self.settings.api_url,
            auto_retry=False,
            http_cache=False,
            timeout=TIMEOUT_SECONDS,
            user_agent=USER_AGENT,
        )

    def environment(self, name: str) -> str:
        return f"{self.settings.environment_prefix}{name}"

    def deliver(self, update: Update, memory: Memory) -> None:
        try:
            self._deliver(update, memory)
        except Exception as error:
            raise self._classify(error) from error

    def _deliver(self, update: Update, memory: Memory) -> None:
        repos = self.client.rest.repos
        environment = self.environment(update.name)
        deployment_id, known_commit = memory.deployment(update.name)
        if update.state == "inactive":
            if not deployment_id:
                found = repos.list_deployments(
                    self.owner, self.repo, environment=environment, per_page=1
                ).json()
                if not found:
                    return  # never deployed: nothing to mark
                deployment_id = str(found[0]["id"])
            self._status(int(deployment_id), update)
            return
        commit = update.commit or self._head(update.pull_request)
        if not (deployment_id and known_commit == commit):
            deployment_id = self._deployment(update, environment, commit)
            memory.remember(
                update.name,
                deployment_id,
                commit,
                f"{self.web}/{self.owner}/{self.repo}/deployments/{environment}",
            )
        self._status(int(deployment_id), update)

    def _head(self, pull_request: int | None) -> str:
        if pull_request is None:
            raise Rejected("no commit and no pull request to take the commit from")
        pull = self.client.rest.pulls.get(self.owner, self.repo, pull_request).json()
        return str(pull["head"]["sha"])

    def _deployment(self, update: Update, environment: str, commit: str) -> str:
        """The deployment of `commit` to `environment`: an existing one (after a restart), else new."""
        repos = self.client.rest.repos
        existing = repos.list_deployments(
            self.owner, self.repo, sha=commit, environment=environment, per_page=1
        ).json()
        if existing:
            return str(existing[0]["id"])
        preview = update.kind == "preview"
        created = repos.create_deployment(
            self.owner,
            self.repo,
            data={
                "ref": commit,
                "environment": environment,
                "description": f"envctl {update.kind} environment {update.name}",
                "transient_environment": preview,
                "production_environment": not preview and update.name == "production",
                "auto_merge": False,
                "required_contexts": [],
            },
        ).json()
        return str(created["id"])

    def _status(self, deployment_id: int, update: Update) -> None:
        data: dict[str, Any] = {"state": update.state, "description": update.description}
        if update.environment_url:
            data["environment_url"] = update.environment_url
        if update.log_url:
            data["log_url"] = update.log_url
        statuses: Any = self.client.rest.repos.create_deployment_status  # data: a TypedDict, built as a dict
        statuses(self.owner, self.repo, deployment_id, data=data)

    @staticmethod
    def _classify(error: Exception) -> Exception:  # noqa: PLR0911 - one outcome per GitHub answer
        from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed  # noqa: PLC0415

        if isinstance(error, Retry | Rejected):
            return error
        if isinstance(error, RateLimitExceeded):
            return Retry(
                "rate_limited",
                f"GitHub rate limit: retry after {error.retry_after.total_seconds():g} s",
                after=max(error.retry_after.total_seconds(), 1.0),
            )
        if isinstance(error, RequestFailed):
            status = error.response.status_code
            message = _message(error.response)
            if status == 401:
                return Retry("auth", f"GitHub answered 401: {message}; check ENVCTL_GITHUB_TOKEN")
            if status == 403:
                return Retry("auth", f"GitHub answered 403: {message}; the token needs deployments: write")
            if status == 429 or status >= 500:
                return Retry("unavailable", f"GitHub answered {status}: {message}")
            return Rejected(f"GitHub answered {status}: {message}")
        if isinstance(error, RequestError):
            return Retry("unavailable", f"GitHub unreachable: {error.exc!r}")
        return error


def _message(response: Any) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except Exception:  # not JSON: the status says enough
        return ""


# --- GitLab -------------------------------------------------------------------------------------

GITLAB_STATES = {"in_progress": "running", "success": "success", "failure": "failed", "error": "failed"}


class GitLabTarget:
    """The project's environment per preview, a deployment per commit, stopped on destroy."""

    name = "gitlab"

    def __init__(self, settings: GitLabSettings, token: str | None) -> None:
        import gitlab  # noqa: PLC0415 - only imported when GitLab is configured

        self.settings = settings
        self.client = gitlab.Gitlab(
            settings.url,
            private_token=token,
            timeout=TIMEOUT_SECONDS,
            retry_transient_errors=False,
            user_agent=USER_AGENT,
        )
        self.project = self.client.projects.get(settings.project, lazy=True)

    def deliver(self, update: Update, memory: Memory) -> None:
        try:
            self._deliver(update, memory)
        except Exception as error:
            raise self._classify(error) from error

    def _environment(self, name: str, url: str) -> Any:
        environment_name = f"{self.settings.environment_prefix}{name}"
        found = [
            e for e in self.project.environments.list(name=environment_name) if e.name == environment_name
        ]
        if found:
            environment = found[0]
            if url and getattr(environment, "external_url", None) != url:
                environment.external_url = url
                environment.save()
            return environment
        data = {"name": environment_name}
        if url:
            data["external_url"] = url
        return self.project.environments.create(data)

    def _deliver(self, update: Update, memory: Memory) -> None:
        environment_name = f"{self.settings.environment_prefix}{update.name}"
        if update.state == "inactive":
            for environment in self.project.environments.list(name=environment_name):
                if environment.name == environment_name and getattr(environment, "state", "") != "stopped":
                    environment.stop()
            return
        environment = self._environment(update.name, update.environment_url)
        deployment_id, known_commit = memory.deployment(update.name)
        status = GITLAB_STATES[update.state]
        if update.pull_request is not None:
            request = self.project.mergerequests.get(update.pull_request)
            commit, ref = update.commit or request.sha, request.source_branch
        elif update.commit:
            commit, ref = update.commit, update.commit
        else:
            raise Rejected("no commit and no merge request to take the commit from")
        if deployment_id and known_commit == commit:
            deployment = self.project.deployments.get(int(deployment_id), lazy=True)
            deployment.status = status
            deployment.save()
            return
        created = self.project.deployments.create(
            {"environment": environment.name, "sha": commit, "ref": ref, "tag": False, "status": status}
        )
        memory.remember(
            update.name,
            str(created.id),
            commit,
            f"{self.settings.url.rstrip('/')}/{self.settings.project}/-/environments/{environment.id}",
        )

    @staticmethod
    def _classify(error: Exception) -> Exception:  # noqa: PLR0911 - one outcome per GitLab answer
        import gitlab  # noqa: PLC0415
        import requests  # noqa: PLC0415

        if isinstance(error, Retry | Rejected):
            return error
        if isinstance(error, gitlab.exceptions.GitlabAuthenticationError):
            return Retry("auth", f"GitLab answered 401: {error.error_message}; check ENVCTL_GITLAB_TOKEN")
        if isinstance(error, gitlab.exceptions.GitlabError):
            code = error.response_code or 0
            if code == 429:
                after = None
                headers = getattr(error, "response_headers", None) or {}
                if str(headers.get("Retry-After", "")).isdigit():
                    after = float(headers["Retry-After"])
                return Retry("rate_limited", f"GitLab rate limit: {error.error_message}", after=after)
            if code == 403:
                return Retry("auth", f"GitLab answered 403: {error.error_message}")
            if code >= 500 or code == 0:
                return Retry("unavailable", f"GitLab answered {code}: {error.error_message}")
            return Rejected(f"GitLab answered {code}: {error.error_message}")
        if isinstance(error, requests.exceptions.RequestException):
            return Retry("unavailable", f"GitLab unreachable: {error!r}")
        return error
