"""The composition root: settings -> the running parts. Nothing else builds parts.

`controller(settings)` opens what a command needs (store, source, synth
worker, Terraform runner, state files, inventory, queue, alert sinks, pull
request feedback, reconciler, actions), checks Terraform and the state store,
recovers interrupted runs, and closes everything afterwards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.actions import Actions
from controller.alerts import Alerts
from controller.feedback import Feedback
from controller.hooks import StackHooks
from controller.inventory import Inventory
from controller.reconciler import Reconciler
from controller.settings import Settings
from controller.source import GitSource
from controller.statefiles import StateFiles
from controller.steps import Parts
from controller.store import StatusStore
from controller.synth import SynthWorker, stack_version
from controller.terraform import TerraformRunner
from controller.worker import Worker


def store_for(settings: Settings) -> StatusStore:
    return StatusStore(settings.workdir / "status.db")


def runner_for(settings: Settings) -> TerraformRunner:
    plugin_cache = Path(settings.terraform.plugin_cache_dir or settings.workdir / "plugin-cache")
    return TerraformRunner(settings.terraform, plugin_cache)


def reconciler(
    settings: Settings,
    *,
    source: GitSource,
    synth: SynthWorker,
    terraform: TerraformRunner,
    store: StatusStore,
    state: StateFiles,
    alerts: Alerts | None = None,
    clock: Callable[[], float] = time.time,
    jitter: Callable[[], float] = random.random,
) -> Reconciler:
    """The reconciler and everything under it, from already opened collaborators."""
    alerts = alerts or Alerts.from_settings(settings.alerts)
    parts = Parts(
        settings,
        synth=synth,
        runner=terraform,
        store=store,
        state=state,
        inventory=Inventory(settings, state, store, clock),
        hooks=StackHooks(
            endpoint=settings.hooks.endpoint,
            quota_check=settings.hooks.quota_check,
            cleanup_timeout_seconds=settings.hooks.cleanup_timeout_seconds,
        ),
        stack_version=stack_version(settings.stack),
    )
    feedback = Feedback.from_settings(settings, store)
    worker = Worker(parts, alerts=alerts, feedback=feedback, clock=clock, jitter=jitter)
    return Reconciler(
        settings, source=source, parts=parts, worker=worker, alerts=alerts, feedback=feedback, clock=clock
    )


@dataclass
class Controller:
    """Everything a command may need, built from the settings."""

    settings: Settings
    store: StatusStore
    source: GitSource
    synth: SynthWorker
    terraform: TerraformRunner
    reconciler: Reconciler
    actions: Actions


@contextmanager
def controller(settings: Settings) -> Iterator[Controller]:
    """Build the controller's parts, check Terraform, and close everything afterwards."""
    store = store_for(settings)
    source = GitSource(
        settings.repository.url,
        settings.repository.branch,
        settings.repository.path,
        settings.workdir,
        credentials=settings.secrets.git,
    )
    synth = SynthWorker(settings.stack, settings.synth)
    terraform = runner_for(settings)
    state = StateFiles(settings.state)
    built = reconciler(settings, source=source, synth=synth, terraform=terraform, store=store, state=state)
    try:
        # Fail at start, naming the setting to fix, when Terraform or the state store cannot work.
        built.check_terraform()
        state.check()
        built.recover()
        yield Controller(settings, store, source, synth, terraform, built, Actions(built))
    finally:
        built.queue.close(timeout=0)
        synth.close()
        source.close()
        store.close()
