"""Feedback where developers look: a preview's state on its pull request.

GitHub: a deployment per commit of the pull request, with statuses
(`in_progress` on apply start, `success` with the environment's URL on Ready,
`failure`/`error` on Failed/Stalled, `inactive` on Destroyed); the pull
request shows "This branch was deployed" and updates it in place, and GitHub
marks a transient environment's older deployments inactive. GitLab: the
environment with its external URL, a deployment per commit with its status,
the environment stopped on destroy.

Deliveries never run on the reconcile path: the executor only appends an
update to an outbox in the status store, and one worker thread per target
delivers the outbox in order. A failing, slow or rate-limited host pauses its
worker (backoff, or the host's Retry-After) and delays nothing else; updates
survive a restart; the deployment id is kept on the environment's record, and
before creating one the worker looks for an existing deployment of that commit
and environment, so a restart or a new leader continues it instead of creating
a duplicate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Protocol

import structlog

from controller import backoff, metrics
from controller.hosts import Memory, Rejected, Retry, Update
from controller.settings import GitHubSettings, GitLabSettings, Settings
from controller.store import OutboxItem, StatusStore
from controller.types import Record

log = structlog.get_logger("envctl.feedback")

STATES = ("in_progress", "success", "failure", "error", "inactive")
DESCRIPTION_LIMIT = 140
"""GitHub keeps at most 140 characters of a deployment status's description."""
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 600.0


class Target(Protocol):
    name: str

    def deliver(self, update: Update, memory: Memory) -> None:
        """Show `update`; raise Retry or Rejected."""


class StoreMemory:
    """Deployment ids kept on each environment's status record."""

    def __init__(self, store: StatusStore) -> None:
        self.store = store

    def deployment(self, name: str) -> tuple[str, str]:
        record = self.store.load(name)
        return (record.deployment_id, record.deployment_commit) if record else ("", "")

    def remember(self, name: str, deployment_id: str, commit: str, url: str) -> None:
        if self.store.load(name) is not None:
            self.store.update(name, deployment_id=deployment_id, deployment_commit=commit, deployment_url=url)


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= DESCRIPTION_LIMIT else line[: DESCRIPTION_LIMIT - 1] + "…"


class Feedback:
    """Turns records into updates, keeps them in the outbox, and runs one worker per target."""

    def __init__(
        self,
        settings: Settings,
        store: StatusStore,
        targets: list[Target],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.targets = targets
        self.clock = clock
        self._wake = {target.name: threading.Event() for target in targets}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._auth_logged: set[str] = set()
        self.memory = StoreMemory(store)

    @classmethod
    def from_settings(cls, settings: Settings, store: StatusStore) -> Feedback:
        targets: list[Target] = []
        if settings.github is not None:
            from controller.hosts import GitHubTarget  # noqa: PLC0415

            targets.append(GitHubTarget(settings.github, settings.secrets.github_token))
        if settings.gitlab is not None:
            from controller.hosts import GitLabTarget  # noqa: PLC0415 - only when configured

            targets.append(GitLabTarget(settings.gitlab, settings.secrets.gitlab_token))
        return cls(settings, store, targets)

    # --- from the executor (never blocks) -------------------------------------------------------

    def host(self, target: str) -> GitHubSettings | GitLabSettings | None:
        """The settings of the host `target` names (`github` or `gitlab`)."""
        return self.settings.github if target == "github" else self.settings.gitlab

    def wanted(self, kind: str, target: str) -> bool:
        config = self.host(target)
        return config is not None and (kind == "preview" or config.deployments == "all")

    def notify(self, record: Record, state: str, description: str) -> None:
        """Queue `state` of `record` for every target that shows its kind."""
        assert state in STATES, state
        spec = record.spec or {}
        for target in self.targets:
            # No kind anywhere: "" and any other default (the mutants) are both "not a preview".
            if not self.wanted(record.kind or str(spec.get("kind", "")), target.name):  # pragma: no mutate
                continue
            update = Update(
                name=record.name,
                kind=record.kind,
                state=state,
                description=one_line(description),
                pull_request=spec.get("pull_request"),
                commit=str(spec.get("commit") or ""),
                environment_url=self.environment_url(record, target.name) if state == "success" else "",
                log_url=self.log_url(record.name),
            )
            self.store.outbox_add(target.name, record.name, json.dumps(asdict(update)))
            self._wake[target.name].set()

    def environment_url(self, record: Record, target: str) -> str:
        """The stack's `environment_url` output, else the target's url_template."""
        output = record.outputs.get("environment_url")
        if isinstance(output, str) and output.startswith(("http://", "https://")):
            return output
        config = self.host(target)
        template = config.url_template if config is not None else None
        return template.format(name=record.name) if template else ""

    def log_url(self, name: str) -> str:
        public = self.settings.api.public_url if self.settings.api is not None else None
        return f"{public.rstrip('/')}/environments/{name}" if public else ""

    # --- the workers ----------------------------------------------------------------------------

    def start(self) -> None:
        for target in self.targets:
            thread = threading.Thread(
                target=self._run, args=(target,), name=f"feedback-{target.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:  # pragma: no mutate - a default only callers' waits see
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            # join(None) (a mutant) differs only for a worker stuck in a host call past `timeout`.
            thread.join(timeout)  # pragma: no mutate

    def _run(self, target: Target) -> None:
        wake = self._wake[target.name]
        while not self._stop.is_set():
            # Cleared before looking, so an update queued while delivering is never slept through.
            wake.clear()
            wake.wait(timeout=self.deliver_due(target))

    def deliver_due(self, target: Target) -> float:
        """Deliver what is due, in order; return how long to wait before looking again."""
        for item in self.store.outbox_pending(target.name):
            if self._stop.is_set():
                return 0.0
            now = self.clock()
            if item.next_at > now:
                # The host asked for a pause (or is failing): everything after waits too, in order.
                return min(item.next_at - now, 60.0)
            update = Update(**json.loads(item.payload))
            try:
                target.deliver(update, self.memory)
            except Retry as retry:
                self._retry(target, item, retry)
                return 0.0
            except Rejected as rejected:
                log.warning("feedback_rejected", target=target.name, env=update.name, error=str(rejected))
                metrics.FEEDBACK.labels(target.name, "rejected").inc()
                self.store.outbox_done(item.id)
                continue
            except Exception as error:  # a client bug must not stop the worker or lose the update
                log.exception("feedback_crashed", target=target.name, env=update.name)
                self._retry(target, item, Retry("unavailable", repr(error)))
                return 0.0
            self.store.outbox_done(item.id)
            self._auth_logged.discard(target.name)
            metrics.FEEDBACK.labels(target.name, "delivered").inc()
            log.info("feedback_delivered", target=target.name, env=update.name, state=update.state)
        return 60.0

    def _retry(self, target: Target, item: OutboxItem, retry: Retry) -> None:
        attempts = item.attempts + 1
        delay = retry.after
        if delay is None:
            delay = backoff.delay(attempts, BACKOFF_BASE_SECONDS, BACKOFF_MAX_SECONDS)
        self.store.outbox_later(item.id, attempts, self.clock() + delay)
        metrics.FEEDBACK.labels(target.name, retry.reason).inc()
        if retry.reason == "auth":
            # Once per episode: a wrong token would otherwise fill the log on every retry.
            if target.name not in self._auth_logged:
                self._auth_logged.add(target.name)
                log.error(
                    "feedback_auth_failed", target=target.name, error=str(retry), retry_in=round(delay, 1)
                )
            return
        log.warning(
            "feedback_retry",
            target=target.name,
            env=item.name,
            reason=retry.reason,
            error=str(retry),
            attempts=attempts,
            retry_in=round(delay, 1),
        )

    def drain(self, timeout: float = 30.0) -> bool:  # pragma: no mutate - a default
        """Deliver everything due now (CLI commands and tests); True when the outbox emptied."""
        deadline = time.monotonic() + timeout
        # `<=` and a longer sleep (mutants) change only how long a failing drain takes.
        while time.monotonic() < deadline:  # pragma: no mutate
            for target in self.targets:
                self.deliver_due(target)
            if not any(self.store.outbox_pending(t.name) for t in self.targets):
                return True
            time.sleep(0.05)  # pragma: no mutate
        return False
