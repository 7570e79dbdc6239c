"""The `envctl` command line: arguments and commands; controller.wiring builds the parts.

Exit codes: 0 success, 1 failure, 2 usage (bad arguments, bad settings, a
destroy without --confirm).
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.metadata
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from controller import logs, views, wiring
from controller import settings as settings_module
from controller.access import is_loopback
from controller.api import Api
from controller.backend import backend_block
from controller.client import call, fetch_rows
from controller.environments import NAME_PATTERN, NAME_RULE, is_environment_file, load_all, policed
from controller.errors import EnvctlError, NotFound, SettingsError, WorkdirBusy
from controller.leader import Lease, advertise_url
from controller.planner import Kind, awaits_confirmation
from controller.scheduler import Daemon, on_shutdown_signal
from controller.settings import Settings, defaults_for, secret_values
from controller.statefiles import StateFiles
from controller.store import iso
from controller.synth import SynthWorker, parameter_problems
from controller.terraform import make_undumpable
from controller.types import Environment, Invalid, Phase, Record

log = structlog.get_logger("envctl.cli")
OK, FAILURE, USAGE = 0, 1, 2
DRIFTED = 2


class UsageError(Exception):
    """A command used in a way it does not allow."""


# --- commands -----------------------------------------------------------------------------------


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    store = wiring.store_for(settings)
    try:
        rows = store.rows()
        detail = store.detail(args.name) if args.name else None
        source_error = store.get_meta("source_error") or ""
        last = store.get_meta("last_revision") or ""
        fetched = store.get_meta("last_fetch_at")
        api_url = store.get_meta("api_url") or ""
    finally:
        store.close()
    served_by = ""
    if settings.leader_election is not None and api_url:
        # With several replicas only the leader keeps status: ask the daemon beside this workdir,
        # whose API answers with the leader's records.
        try:
            served_by, rows = fetch_rows(api_url)
            if args.name:
                detail = call(api_url, "GET", f"/api/environments/{args.name}", timeout=10)
        except NotFound:
            detail = None
        except (OSError, ValueError, EnvctlError) as error:
            print(
                f"envctl: no answer from the daemon's API at {api_url} ({error}); showing this "
                "workdir's status database, which only a leader keeps current",
                file=sys.stderr,
            )
    if served_by == "follower":
        print("envctl: the leader is not reachable; this is this replica's own copy", file=sys.stderr)
    now = time.time()
    if args.name:
        if detail is None:
            raise UsageError(f"{args.name}: no such environment in the status database")
        print(json.dumps(detail, indent=2) if args.json else views.detail_text(detail, now))
        return OK
    if args.json:
        print(json.dumps([r for r in rows if args.all or not views.hidden(r, now)], indent=2))
        return OK
    if served_by:
        print(f"served by the {served_by} (through {api_url})")
    else:
        when = views.relative(iso(float(fetched)), now) if fetched else "never"
        print(
            f"revision {last[:12] or '(never fetched)'}, fetched {when}"
            + (f"; source error: {source_error}" if source_error else "")
        )
    print(views.table(rows, now, show_all=args.all))
    return OK


def cmd_validate(settings: Settings | None, args: argparse.Namespace) -> int:
    """Every problem of every environment file, as the daemon and the stack would find them."""
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    files = {
        str(p): p.read_text() for p in sorted(folder.iterdir()) if p.is_file() and is_environment_file(p.name)
    }
    region = settings.default_region if settings else "us-east-1"
    entry = args.stack or (settings.stack if settings else "stack.app:build")

    problems: list[str] = []
    unchecked = False
    loaded = load_all(files, region)
    if settings is not None:
        # With the settings: the platform team's rules too (locked parameters, TTL, drift interval).
        loaded = policed(loaded, settings)
    for item in loaded.values():
        if isinstance(item, Invalid):
            problems.append(item.message)
            continue
        # What the stack will refuse after merge, found now (parameters, with the fleet's defaults).
        defaults = defaults_for(settings, item.kind) if settings else {}
        found = parameter_problems(entry, replace(item, parameters={**defaults, **item.parameters}))
        unchecked = unchecked or found is None
        problems.extend(f"{item.file}: {problem}" for problem in found or [])
    for problem in problems:
        print(problem)
    if unchecked:
        print(
            f"note: {entry} declares no parameters (no {entry.split('.')[0]}.parameters); they are "
            "checked when it synthesizes",
            file=sys.stderr,
        )
    if not problems:
        print(f"{len(files)} environment files in {folder} are valid")
    return FAILURE if problems else OK


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


NOT_HELD = (
    "{name}: not waiting for a destroy (phase {phase}); `envctl destroy --confirm` only releases a "
    "destroy envctl holds. To destroy it, close its pull request (state: closed) or remove its file; "
    "a destroy held by the safety limits or for a persistent environment then waits for "
    "this confirmation. Git stays the source of truth."
)


def cmd_destroy(settings: Settings, args: argparse.Namespace) -> int:
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
        return _release_now(settings, names)
    except WorkdirBusy:
        # A daemon owns the workdir: record the confirmations of held destroys; its next pass destroys.
        store = wiring.store_for(settings)
        try:
            for name in names:
                record = store.load(name)
                if record is None:
                    raise UsageError(f"{name}: no such environment in the status store") from None
                if not awaits_confirmation(record):
                    raise UsageError(NOT_HELD.format(name=name, phase=record.phase.value)) from None
            # The same write path as a run's outcome (one transaction per record).
            for name in names:
                store.commit(name, {"destroy_confirmed": True})
        finally:
            store.close()
        for name in names:
            print(f"{name}: destroy confirmed; the running controller destroys it on its next pass")
        return OK


def _release_now(settings: Settings, names: list[str]) -> int:
    """Confirm and run each held destroy of `names` now (no daemon owns the workdir)."""
    with wiring.controller(settings) as parts:
        revision = parts.source.fetch()
        # Decide as a pass would (after adopting what only the inventory knows, for a lost workdir).
        actions, _ = parts.reconciler.decide(revision)
        decided = {a.name: a for a in actions}
        # Every name is checked before anything is confirmed: a typo confirms nothing.
        for name in names:
            action = decided.get(name)
            record = parts.store.load(name)
            if action is None or record is None:
                raise UsageError(
                    f"{name}: no such environment, in the repository, the status store or the inventory"
                )
            held = action.phase is Phase.DESTROY_HELD or (
                action.kind in (Kind.NOTHING, Kind.WAIT) and awaits_confirmation(record)
            )
            if action.kind is not Kind.DESTROY and not held:
                raise UsageError(NOT_HELD.format(name=name, phase=record.phase.value))
        for name in names:
            parts.reconciler.worker.record(name, {"destroy_confirmed": True}, "confirm")
        actions, _ = parts.reconciler.decide(revision)
        decided = {a.name: a for a in actions}
        outcomes = {}
        for name in names:
            action = decided[name]
            if action.kind is Kind.APPLY and action.environment is not None:
                # A held kind change of a persistent environment, released: applied as its file says.
                outcomes[name] = parts.reconciler.execute(action, revision)
                print(f"{name}: {outcomes[name]} (kind change confirmed)")
                continue
            if action.kind is not Kind.DESTROY:
                # Stalled on something other than a destroy (an apply): confirming changes nothing.
                parts.reconciler.worker.record(name, {"destroy_confirmed": False}, "confirm")
                print(NOT_HELD.format(name=name, phase=action.phase or "unchanged"), file=sys.stderr)
                outcomes[name] = "not held"
                continue
            outcomes[name] = parts.reconciler.execute(action, revision)
            print(f"{name}: {outcomes[name]}")
    return OK if all(outcome in ("destroyed", "applied") for outcome in outcomes.values()) else FAILURE


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
    state = StateFiles(settings.state)
    saved = state.get(settings.state.config_key(name))
    terraform = wiring.runner_for(settings)
    with tempfile.TemporaryDirectory(prefix=f"envctl-unlock-{name}-") as tmp:
        workdir = Path(tmp)
        if saved is not None:
            (workdir / "main.tf.json").write_bytes(saved)
        else:
            spec = _recorded_spec(settings, state, name)
            synth = SynthWorker(settings.stack, settings.synth)
            try:
                synth.synth(Environment.from_spec(spec), backend_block(settings.state, name), workdir)
            finally:
                synth.close()
        terraform.init(workdir, env=name)
        terraform.force_unlock(workdir, args.lock_id, env=name)
    log.warning("state_lock_released_by_operator", env=name, lock_id=args.lock_id)
    print(f"{name}: lock {args.lock_id} released")
    return OK


def _recorded_spec(settings: Settings, state: StateFiles, name: str) -> dict[str, Any]:
    """The last valid spec of `name`: from the status store, else its inventory entry."""
    store = wiring.store_for(settings)
    try:
        record = store.load(name)
    finally:
        store.close()
    if record is not None and record.spec:
        return record.spec
    entry = state.get(settings.state.inventory_key(name))
    spec = json.loads(entry).get("spec") if entry else None
    if not isinstance(spec, dict):
        raise UsageError(f"{name}: no saved configuration, status record or inventory entry to unlock with")
    return spec


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


COMMANDS = {
    "status": cmd_status,
    "reconcile": cmd_reconcile,
    "run": cmd_run,
    "synth": cmd_synth,
    "plan": cmd_plan,
    "destroy": cmd_destroy,
    "unlock": cmd_unlock,
    "drift": cmd_drift,
}


LOG_LEVELS = ["debug", "info", "warning", "error"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="envctl",
        description="GitOps controller for cloud environments: one environment per file of a git repository",
        epilog="Exit codes: 0 success, 1 failure, 2 usage (drift: 2 drifted or nothing to check).",
    )
    top.add_argument("--version", action="version", version=f"envctl {version()}")
    top.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default: info)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file (default $ENVCTL_CONFIG, then ./envctl.yaml)")
    # Accepted after the subcommand too; SUPPRESS keeps a top-level --log-level when this one is absent.
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="log level")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="reconcile on a schedule until stopped (the daemon)")
    sub.add_parser("reconcile", parents=[common], help="run one pass and exit")
    status = sub.add_parser("status", parents=[common], help="show every environment, or one")
    status.add_argument("name", nargs="?", help="one environment: spec, phases, runs, drift, outputs")
    status.add_argument("--json", action="store_true", help="JSON with ISO 8601 times")
    status.add_argument("--all", action="store_true", help="include environments destroyed over a day ago")
    validate = sub.add_parser("validate", parents=[common], help="check a folder of environment files")
    validate.add_argument("dir", nargs="?", default="environments", help="folder (default: environments)")
    validate.add_argument(
        "--stack", help="the stack entry point whose parameters to check (default: the settings' stack)"
    )
    validate.add_argument(
        "--stack-only",
        action="store_true",
        help="read no settings file: check the files and the stack's parameters only (for CI)",
    )
    synth = sub.add_parser("synth", parents=[common], help="synthesize one environment's Terraform JSON")
    synth.add_argument("name", help="environment name")
    synth.add_argument("--out", help="folder for main.tf.json (default: WORKDIR/synth/NAME)")
    plan = sub.add_parser("plan", parents=[common], help="print Terraform's plan of one environment")
    plan.add_argument("name", help="environment name")
    destroy = sub.add_parser(
        "destroy", parents=[common], help="release destroys envctl holds (safety limits, persistent)"
    )
    destroy.add_argument("names", nargs="*", metavar="NAME", help="environment names")
    destroy.add_argument(
        "--all-held", action="store_true", help="every held destroy (listed first; needs --confirm)"
    )
    destroy.add_argument("--confirm", action="store_true", help="required: you mean it")
    unlock = sub.add_parser(
        "unlock", parents=[common], help="release a state lock whose holder you checked is gone"
    )
    unlock.add_argument("name", help="environment name")
    unlock.add_argument("lock_id", help="the lock's ID, as the lock error names it")
    unlock.add_argument("--confirm", action="store_true", help="required: you checked the holder is gone")
    drift = sub.add_parser(
        "drift", parents=[common], help="check drift now (exit 0 in sync, 2 drifted, 1 failed)"
    )
    drift.add_argument("name", nargs="?", help="one environment (default: every Ready one)")
    drift.add_argument(
        "--repair", action="store_true", help="apply the inspected plan if it drifted (needs NAME)"
    )
    return top


def version() -> str:
    try:
        return importlib.metadata.version("envctl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a hung process is diagnosed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The daemon and `reconcile` log on stdout; the other commands answer there, and log on stderr.
    stream = sys.stdout if args.command in ("run", "reconcile") else sys.stderr
    logs.configure(args.log_level, secrets=secret_values(os.environ), stream=stream)
    # Before any secret is read or any child started: children cannot read this process's memory.
    make_undumpable()
    try:
        if args.command == "validate":
            # --stack-only: no settings file is read (the environments repository's CI has none).
            settings = None if args.stack_only else _maybe_settings(args.config)
            return cmd_validate(settings, args)
        settings = settings_module.load(settings_module.config_path(args.config))
        return COMMANDS[args.command](settings, args)
    except (SettingsError, UsageError) as error:
        print(f"envctl: {error}", file=sys.stderr)
        return USAGE
    except EnvctlError as error:
        print(f"envctl: {error}", file=sys.stderr)
        return FAILURE
    except Exception as error:  # a bug: one line naming it; the traceback at debug
        log.debug("command_crashed", command=args.command, exc_info=True)
        print(
            f"envctl: {args.command} failed: {type(error).__name__}: {error} (a bug; "
            "`--log-level debug` shows the traceback)",
            file=sys.stderr,
        )
        return FAILURE


def _maybe_settings(explicit: str | None) -> Settings | None:
    path = settings_module.config_path(explicit)
    return settings_module.load(path) if explicit or path.exists() else None
