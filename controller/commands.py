"""The commands that act: reconcile, run, synth, plan, destroy, unlock, drift.

Beside a running daemon (which owns the workdir), a command asks its API;
otherwise controller.wiring builds what it needs. Exit codes: 0 success,
1 failure, 2 usage (drift: 2 drifted or nothing to check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from controller import settings as settings_module
from controller import views, wiring
from controller.access import is_loopback
from controller.actions import NotHeld, not_held, unlock
from controller.api import Api
from controller.backend import backend_block
from controller.client import call
from controller.environments import NAME_PATTERN, NAME_RULE
from controller.errors import EnvctlError, NotFound, WorkdirBusy
from controller.leader import Lease, advertise_url
from controller.planner import awaits_confirmation
from controller.scheduler import Daemon, on_shutdown_signal
from controller.settings import Settings
from controller.statefiles import StateFiles
from controller.types import Environment, Invalid, Record

log = structlog.get_logger("envctl.cli")


OK, FAILURE, USAGE = 0, 1, 2


DRIFTED = 2


class UsageError(Exception):
    """A command used in a way it does not allow."""


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    settings_module.check_host_credentials(settings)
    with wiring.controller(settings) as parts:
        on_shutdown_signal(parts.reconciler.stop)
        result = parts.reconciler.run_pass()
        # Show the pass on the pull requests before exiting; what is left is sent by the next run.
        if not parts.reconciler.feedback.drain(timeout=30):
            print(
                "envctl: some pull request updates are not delivered yet; the next run sends them",
                file=sys.stderr,
            )
    if result.error:
        print(f"source error: {result.error}", file=sys.stderr)
        return FAILURE
    return FAILURE if result.failed else OK


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    settings_module.check_host_credentials(settings)
    secret = settings.secrets.webhook
    gitlab_secret = settings.secrets.gitlab_webhook
    if settings.api is not None and settings.api.webhooks and not (secret or gitlab_secret):
        raise UsageError(
            f"{settings.source_file}: api.webhooks: true needs a webhook secret: "
            "ENVCTL_GITHUB_WEBHOOK_SECRET (or ENVCTL_WEBHOOK_SECRET) for GitHub, "
            "ENVCTL_GITLAB_WEBHOOK_SECRET for GitLab"
        )
    if settings.api is not None and not is_loopback(settings.api.host) and not settings.secrets.api_token:
        # Anyone who reaches the port could plan, check drift and read every record.
        raise UsageError(
            f"{settings.source_file}: api.host: {settings.api.host!r} is reachable from other hosts; set "
            "ENVCTL_API_TOKEN (or ENVCTL_API_TOKEN_FILE) so only its holders can operate envctl, or "
            "listen on 127.0.0.1"
        )
    with wiring.controller(settings) as parts:
        lease = None
        if settings.leader_election is not None:
            lease = Lease(
                settings.leader_election, region=settings.state.region, endpoint=settings.state.endpoint
            )
        daemon = Daemon(parts.reconciler, settings.repository.poll_seconds, lease)
        api = None
        if settings.api is not None:
            api = Api(
                settings.api,
                parts.store,
                refresh=daemon.request_pass,
                rows=parts.store.rows,
                webhook_secret=secret if settings.api.webhooks else None,
                gitlab_secret=gitlab_secret if settings.api.webhooks else None,
                role=daemon.role,
                leader=lease.leader_url if lease else lambda: None,
                actions=parts.actions,
                pull_url=pull_url(settings),
                api_token=settings.secrets.api_token,
                read_token=settings.secrets.api_read_token,
            )
            if lease is not None and settings.leader_election is not None:
                lease.url = advertise_url(settings.leader_election, settings.api, api.port)
                api.advertised = lease.url
            # `envctl status` in this pod asks this API, which answers from the leader.
            parts.store.set_meta("api_url", api.local_url)
        parts.synth.start()
        return daemon.run(api)


def pull_url(settings: Settings) -> str | None:
    """Where a pull request of the application is seen, `...{number}`, from the host settings."""
    if settings.github is not None:
        from controller.hosts import github_web_url  # noqa: PLC0415

        return f"{github_web_url(settings.github.api_url)}/{settings.github.repository}/pull/{{number}}"
    if settings.gitlab is not None:
        return f"{settings.gitlab.url.rstrip('/')}/{settings.gitlab.project}/-/merge_requests/{{number}}"
    return None


def _current(parts: wiring.Controller, name: str) -> tuple[Environment | None, Record | None, Any]:
    """The environment as the repository declares it now, and as recorded."""
    revision = parts.source.fetch()
    desired = parts.reconciler.desired(revision)
    wanted = desired.get(name)
    record = parts.store.load(name)
    if isinstance(wanted, Invalid):
        raise EnvctlError(wanted.message)
    return wanted, record, revision


def _daemon_api(settings: Settings) -> str:
    """The API of the daemon that owns this workdir (after WorkdirBusy)."""
    store = wiring.store_for(settings)
    try:
        api_url = store.get_meta("api_url") or ""
    finally:
        store.close()
    if not api_url:
        raise EnvctlError(
            f"{settings.workdir} is in use by a running envctl without an HTTP API (api: null); run "
            "this command where it runs with its API, or with a workdir of its own (--config)"
        )
    return api_url


def _ask_daemon(settings: Settings, method: str, path: str) -> Any:
    api_url = _daemon_api(settings)
    log.debug("asking_the_daemon", api=api_url, path=path)
    try:
        return call(api_url, method, path)
    except NotFound as error:
        raise UsageError(str(error)) from None
    except ValueError as error:
        raise EnvctlError(f"the daemon at {api_url} answered something that is not JSON: {error}") from None
    except OSError as error:
        raise EnvctlError(
            f"the daemon owning {settings.workdir} does not answer at {api_url}: {error}"
        ) from None


def cmd_synth(settings: Settings, args: argparse.Namespace) -> int:
    out = Path(args.out or settings.workdir / "synth" / args.name)
    try:
        with wiring.controller(settings) as parts:
            wanted, _, _ = _current(parts, args.name)
            if wanted is None:
                raise UsageError(f"{args.name}: no such environment in {settings.repository.path}/")
            synthesized = parts.synth.synth(wanted, backend_block(settings.state, wanted.name), out)
            print(synthesized.file)
            return OK
    except WorkdirBusy:
        document = _ask_daemon(settings, "GET", f"/api/environments/{args.name}/synth")
    out.mkdir(parents=True, exist_ok=True)
    (out / "main.tf.json").write_text(json.dumps(document, indent=2, sort_keys=True))
    print(out / "main.tf.json")
    return OK


def cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    """Terraform's own plan text, then a one-line summary."""
    try:
        with wiring.controller(settings) as parts:
            wanted, _, _ = _current(parts, args.name)
            if wanted is None:
                raise UsageError(f"{args.name}: no such environment in {settings.repository.path}/")
            report = parts.actions.plan(wanted)
    except WorkdirBusy:
        report = _ask_daemon(settings, "POST", f"/api/environments/{args.name}/plan")
    sys.stdout.write(report["text"])
    if report.get("note"):
        print(f"note: {report['note']}")
    print(f"{args.name}: {report['summary']}")
    return OK


def cmd_destroy(settings: Settings, args: argparse.Namespace) -> int:  # noqa: PLR0912 - each way of naming held destroys is checked before anything is confirmed
    """Release held destroys (the one meaning, with or without a running daemon)."""
    names = list(dict.fromkeys(args.names))
    if args.all_held:
        if names:
            raise UsageError("give environment names or --all-held, not both")
        store = wiring.store_for(settings)
        try:
            names = sorted(n for n, r in store.load_all().items() if awaits_confirmation(r))
        finally:
            store.close()
        if not names:
            print("no destroy is held")
            return OK
        print(f"held destroys: {' '.join(names)}")
        if not args.confirm:
            raise UsageError(f"releasing these {len(names)} destroys needs --confirm")
    if not names:
        raise UsageError("name the environments whose held destroy you confirm, or use --all-held")
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise UsageError(f"{name!r} is not an environment name; expected {NAME_RULE}")
    if not args.confirm:
        raise UsageError(f"destroying {' '.join(names)} needs --confirm")
    try:
        with wiring.controller(settings) as parts:
            try:
                released = parts.actions.release(names)
            except (NotFound, NotHeld) as error:
                raise UsageError(str(error)) from None
        for outcome, line in released.values():
            print(line, file=sys.stderr if outcome == "not held" else sys.stdout)
        return OK if all(outcome in ("destroyed", "applied") for outcome, _ in released.values()) else FAILURE
    except WorkdirBusy:
        # A daemon owns the workdir: record the confirmations of held destroys; its next pass destroys.
        store = wiring.store_for(settings)
        try:
            for name in names:
                record = store.load(name)
                if record is None:
                    raise UsageError(f"{name}: no such environment in the status store") from None
                if not awaits_confirmation(record):
                    raise UsageError(not_held(name=name, phase=record.phase.value)) from None
            # The same write path as a run's outcome (one transaction per record).
            for name in names:
                store.commit(name, {"destroy_confirmed": True})
        finally:
            store.close()
        for name in names:
            print(f"{name}: destroy confirmed; the running controller destroys it on its next pass")
        return OK


def cmd_unlock(settings: Settings, args: argparse.Namespace) -> int:
    """`terraform force-unlock` in the environment's configuration, after an operator's check.

    Works beside a running daemon: it runs in a directory of its own, with the configuration of
    the last successful apply (or a synth of the recorded spec when there is none).
    """
    name = args.name
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"{name!r} is not an environment name; expected {NAME_RULE}")
    if not args.confirm:
        raise UsageError(
            f"releasing lock {args.lock_id} of {name} needs --confirm, after you have checked that "
            "its holder is gone (see the README's runbook: Who, Operation, Created)"
        )
    store = wiring.store_for(settings)
    try:
        record = store.load(name)
        unlock(
            settings,
            name,
            args.lock_id,
            state=StateFiles(settings.state),
            runner=wiring.runner_for(settings),
            record=record,
        )
        if record is not None:
            # On the record, through the same write as a run's outcome: who released what, when.
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            released = f"an operator released the state lock {args.lock_id} (envctl unlock, {when})"
            store.commit(name, {"lock_released": released, "lock_released_id": args.lock_id})
    except NotFound as error:
        raise UsageError(str(error)) from None
    finally:
        store.close()
    log.warning("state_lock_released_by_operator", env=name, lock_id=args.lock_id)
    print(f"{name}: lock {args.lock_id} released")
    return OK


def cmd_drift(settings: Settings, args: argparse.Namespace) -> int:
    """Check now: exit 0 in sync (or repaired), 2 drifted or nothing to check, 1 when a check failed."""
    if args.repair and not args.name:
        raise UsageError("--repair needs the environment's name: envctl drift NAME --repair")
    try:
        with wiring.controller(settings) as parts:
            try:
                report = parts.actions.drift_report(args.name, repair=args.repair)
            except NotFound as error:
                raise UsageError(str(error)) from None
            finally:
                parts.reconciler.alerts.close()
    except WorkdirBusy:
        path = f"/api/environments/{args.name}/drift" if args.name else "/api/environments/drift"
        if args.repair:
            path += "?repair=1"
        report = _ask_daemon(settings, "POST", path)
    checked = report["checked"]
    if not checked:
        print("nothing to check: no environment is Ready (drift is checked on applied environments)")
        return DRIFTED
    for name, result in checked.items():
        print(f"{name}: {result['outcome']}")
        for change in result["report"]:
            print(f"  {views.change_line(change)}")
    outcomes = [result["outcome"] for result in checked.values()]
    if "failed" in outcomes:
        return FAILURE
    return DRIFTED if "drifted" in outcomes else OK
