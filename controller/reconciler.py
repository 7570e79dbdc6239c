"""The pass and the queue's items: fetch -> desired -> adopt -> decide -> record or queue.

A pass only decides; applies, destroys and drift checks run on the work
queue's workers (controller.worker), which write each outcome once. After a
pass and after every item, each environment's timer in the queue is set to
when it next needs a visit (controller.timers): a backoff's end, an expiry, a
drift check. A source failure ends the pass before any decision, so nothing is
ever destroyed because git was unreachable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from controller import metrics, timers
from controller.alerts import Alerts
from controller.environments import load_all, policed
from controller.errors import SourceError
from controller.expiry import expires_at, warnings
from controller.feedback import Feedback
from controller.inventory import Inventory
from controller.planner import Action, Kind, decide
from controller.settings import Settings, defaults_for, parse_duration
from controller.source import GitSource, Revision
from controller.status import Notice
from controller.steps import Parts
from controller.tfoutput import check_version
from controller.types import Environment, Invalid, Phase, Reason, Record
from controller.worker import Work, Worker, keep_terraform_work
from controller.workqueue import WorkQueue

log = structlog.get_logger("envctl.reconciler")
__all__ = ["PassResult", "Reconciler", "Work", "policed"]


@dataclass
class PassResult:
    """What one pass did."""

    revision: str = ""
    error: str = ""
    actions: list[Action] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.outcomes.items() if outcome == "failed"]


@dataclass(frozen=True)
class Seen:
    """What the last pass read: the revision, every environment, and when previews expire."""

    revision: Revision
    desired: dict[str, Environment | Invalid]
    expires: dict[str, float]


class Reconciler:
    """Converges every environment of the repository; safe to call pass after pass."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: GitSource,
        parts: Parts,
        worker: Worker,
        alerts: Alerts,
        feedback: Feedback,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.source = source
        self.parts = parts
        self.store = parts.store
        self.inventory: Inventory = parts.inventory
        self.worker = worker
        self.alerts = alerts
        self.feedback = feedback
        self.clock = clock
        self.stack_version = parts.stack_version
        self.on_work_done: Callable[[], None] = lambda: None
        """Called after each queued item."""
        self._pass_lock = threading.Lock()
        self._seen: Seen | None = None
        self.queue: WorkQueue[Work] = WorkQueue(settings.terraform.concurrency, self._work)
        """Applies, destroys, drift checks and timed visits, one item per environment."""

    @property
    def synth(self) -> Any:
        return self.parts.synth

    @synth.setter
    def synth(self, worker: Any) -> None:
        self.parts.synth = worker

    @property
    def terraform(self) -> Any:
        return self.parts.runner

    # --- start ----------------------------------------------------------------------------------

    def check_terraform(self) -> tuple[int, int, int]:
        """The binary is a Terraform envctl supports, and reads the settings' backend arguments."""
        version = self.parts.runner.version()
        check_version(version, self.settings)
        return version

    def recover(self) -> None:
        """Runs a crash or kill left open are recorded as interrupted; their environments resume."""
        self.worker.recover()

    # --- a pass ---------------------------------------------------------------------------------

    def run_pass(self, wait: bool = True) -> PassResult:
        """Fetch, decide and queue the work; never raises for one environment's failure.

        With `wait` (`envctl reconcile`, tests) it returns once the queued work is done, with
        every outcome; the daemon does not wait: a pass never waits for another environment's apply.
        """
        with self._pass_lock:
            started = time.monotonic()
            result = self._run_pass(wait)
            metrics.PASS_SECONDS.observe(time.monotonic() - started)
            metrics.PASSES.labels(
                "source_error" if result.error else "failed" if result.failed else "ok"
            ).inc()
            return result

    def _run_pass(self, wait: bool) -> PassResult:
        result = PassResult()
        # Fetch; an unreachable remote ends the pass and keeps the last good revision.
        try:
            revision = self.source.fetch()
        except SourceError as error:
            result.error = str(error)
            self.store.set_meta("source_error", str(error))
            if not self.store.get_meta("source_failing_since"):
                self.store.set_meta("source_failing_since", str(self.clock()))
            log.error("fetch_failed", error=str(error))
            return result
        result.revision = revision.sha
        for key, value in (
            ("source_error", ""),
            ("source_failing_since", ""),
            ("last_revision", revision.sha),
        ):
            self.store.set_meta(key, value)
        self.store.set_meta("last_fetch_at", str(self.clock()))

        # Read, adopt and decide; the planner never touches the world.
        actions, expires = self.decide(revision)
        result.actions = actions
        decided = {kind.value: sum(a.kind is kind for a in actions) for kind in Kind}
        # An idle pass (nothing to apply, destroy or record) says nothing at info.
        idle = not (decided[Kind.APPLY.value] or decided[Kind.DESTROY.value] or decided[Kind.RECORD.value])
        (log.debug if idle else log.info)("pass_decided", revision=revision.short, **decided)

        # Record what needs no process; queue the rest, one item per environment.
        queued = []
        held: list[tuple[str, Notice]] = []
        for action in actions:
            if action.kind is Kind.RECORD:
                held += [(action.name, n) for n in self.worker.decided(action, revision)]
                result.outcomes[action.name] = action.phase.value if action.phase else "recorded"
            elif action.kind in (Kind.APPLY, Kind.DESTROY):
                self.queue.put(action.name, Work(action, revision), merge=keep_terraform_work)
                queued.append(action.name)
        if held:
            self.worker.alert_batch(held)
        if wait:
            result.outcomes.update(self.queue.wait(queued))
        else:
            result.outcomes.update(dict.fromkeys(queued, "queued"))
        # Record expiry times, warn about previews close to theirs; set every environment's next
        # visit (a queued one's is set when its run ends).
        recorded = self.store.load_all()
        recorded.update(self._warn_expiring(expires, recorded))
        pending = self.queue.pending()
        for name, record in recorded.items():
            if name not in pending:
                self._arm(record)
        return result

    def decide(self, revision: Revision) -> tuple[list[Action], dict[str, float]]:
        """Every environment's action at `revision`, and when previews with a TTL expire."""
        # Read and validate every environment file at that revision.
        desired = self.desired(revision)
        # Take in environments the state bucket's inventory knows and the status store does not.
        self.adopt()
        # Work out when previews with a TTL expire (from the last commit to their file).
        expires = expires_at(
            desired, lambda: self.source.last_changes(revision), revision.committed_at, self.settings.previews
        )
        self._seen = Seen(revision, desired, expires)
        recorded = self.store.load_all()
        actions = self._decide(self._seen, recorded)
        # How an unchanged environment is watched (drift interval and remediation, TTL) takes
        # effect now, without an apply: checks and schedules read the recorded spec.
        for action in actions:
            wanted = desired.get(action.name)
            record = recorded.get(action.name)
            unchanged = action.kind is Kind.NOTHING and isinstance(wanted, Environment)
            if unchanged and record is not None and record.phase is Phase.READY:
                assert isinstance(wanted, Environment)
                every = self.worker.every(wanted)
                if record.spec != wanted.spec() or record.drift_interval_seconds != every:
                    self.worker.record(
                        action.name, {"spec": wanted.spec(), "drift_interval_seconds": every}, "spec"
                    )
                    log.info("watch_settings_changed", env=action.name)
        return actions, expires

    def _decide(self, seen: Seen, recorded: dict[str, Record] | None = None) -> list[Action]:
        now = self.clock()
        return decide(
            seen.desired,
            self.store.load_all() if recorded is None else recorded,
            now,
            stack_version=self.stack_version,
            max_destroys=self.settings.safety.max_destroys_per_pass,
            expired=frozenset(name for name, at in seen.expires.items() if now >= at),
            max_destroys_per_hour=self.settings.safety.max_destroys_per_hour,
            # Run times are the store's wall clock.
            destroyed_last_hour=self.store.runs_started_since("destroy", time.time() - 3600),
        )

    def desired(self, revision: Revision) -> dict[str, Environment | Invalid]:
        """Every environment file at `revision`, validated; settings.stack_parameters fill in defaults."""
        desired = policed(load_all(self.source.files(revision), self.settings.default_region), self.settings)
        return {
            name: replace(env, parameters={**defaults_for(self.settings, env.kind), **env.parameters})
            if isinstance(env, Environment)
            else env
            for name, env in desired.items()
        }

    def adopt(self) -> list[str]:
        """Records for what the inventory knows and the status store does not (see Inventory.adopt)."""
        return self.inventory.adopt()

    def _warn_expiring(self, expires: dict[str, float], recorded: dict[str, Record]) -> dict[str, Record]:
        """Record each preview's expiry and its warning when near (alerted by transitions); the
        records written."""
        lead = parse_duration(self.settings.previews.expiry_warning) or 0.0
        changed = warnings(expires, recorded, now=self.clock(), lead=lead)
        return {name: self.worker.record(name, changes, "expiry")[0] for name, changes in changed.items()}

    # --- the queue's items ----------------------------------------------------------------------

    def _arm(self, record: Record) -> None:
        """Set `record`'s timer in the queue to its next visit (or drop it)."""
        now = self.clock()
        due = timers.due(
            record,
            now=now,
            warning_lead=parse_duration(self.settings.previews.expiry_warning) or 0.0,
            jitter_fraction=self.settings.drift.jitter_fraction,
        )
        if due is None:
            self.queue.cancel(record.name)
        else:
            self.queue.put_after(record.name, Work(), due - now)

    def _work(self, name: str, work: Work) -> str:
        """One queued item; then the environment's next visit is set."""
        try:
            return self._work_on(name, work)
        finally:
            record = self.store.load(name)
            if record is not None:
                self._arm(record)
            self.on_work_done()

    def _work_on(self, name: str, work: Work) -> str:
        """One queued item, acting on the latest recorded state (level-based)."""
        if work.action is None:
            return self._visit(name, work.check)
        record = self.store.load(name)
        action = work.action
        # Done meanwhile (an earlier item applied this very digest, or destroyed it): nothing to do.
        ready = record is not None and record.phase is Phase.READY
        if (
            action.kind is Kind.APPLY
            and ready
            and record is not None
            and record.applied_digest == action.digest
        ):
            return "unchanged"
        if action.kind is Kind.DESTROY and (record is None or record.phase is Phase.DESTROYED):
            return "destroyed"
        # Decided before an earlier run of the same work failed: its backoff holds.
        if record is not None and record.phase is Phase.FAILED and self.clock() < record.next_attempt_at:
            same = (
                record.reason == Reason.DESTROY_FAILED
                if action.kind is Kind.DESTROY
                else record.attempted_digest == action.digest
            )
            if same:
                log.debug("work_backing_off", env=name, retry_at=record.next_attempt_at)
                return "waiting"
        return self.worker.execute(action, work.revision or Revision("", 0.0))

    def _visit(self, name: str, check: bool) -> str:
        """A timer or a drift check asked for: check drift when due, else decide `name` again."""
        record = self.store.load(name)
        if record is None:
            return "nothing"
        due = timers.drift_due(record, self.settings.drift.jitter_fraction)
        if check or (due is not None and due <= self.clock()):
            return self.worker.check_drift(name)
        seen = self._seen
        if seen is None:
            return "nothing"
        # A backoff ended, an expiry came: decided as the last pass would decide it now.
        action = next((a for a in self._decide(seen) if a.name == name), None)
        self._warn_expiring({k: v for k, v in seen.expires.items() if k == name}, {name: record})
        if action is None or action.kind in (Kind.NOTHING, Kind.WAIT):
            return "nothing"
        if action.kind is Kind.RECORD:
            held = self.worker.decided(action, seen.revision)
            if held:
                self.worker.alert_batch([(name, notice) for notice in held])
            return action.phase.value if action.phase else "recorded"
        return self._work_on(name, Work(action, seen.revision))

    def queue_drift_check(self, name: str) -> None:
        """A drift check of `name` in its turn (after any running or waiting apply or destroy)."""
        self.queue.put(name, Work(check=True), merge=keep_terraform_work)

    def check_drift(self, name: str, repair: bool | None = None) -> str:
        """Check `name` now in the caller's thread, in a slot; `skipped` while it runs anything else."""
        outcome = self.queue.run_now(name, lambda: self.worker.check_drift(name, repair))
        if outcome is None:
            return "skipped"
        record = self.store.load(name)
        if record is not None:
            self._arm(record)
        return outcome

    def execute(self, action: Action, revision: Revision) -> str:
        """Run one decided action now in the caller's thread (a confirmed destroy without a daemon)."""
        outcome = self.queue.run_now(action.name, lambda: self._work_on(action.name, Work(action, revision)))
        record = self.store.load(action.name)
        if record is not None:
            self._arm(record)
        return "skipped" if outcome is None else outcome

    def stop(self) -> int:
        """Take no more work, interrupt running Terraform gracefully; returns how many were running."""
        self.queue.close(timeout=0)
        interrupted = self.parts.runner.interrupt_all()
        # The interrupted runs are being recorded; give their workers a moment to finish that.
        self.queue.close(timeout=30)
        return interrupted
