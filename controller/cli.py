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
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from controller import logs, views, wiring
from controller import settings as settings_module
from controller.client import call, fetch_rows
from controller.commands import (
    FAILURE,
    OK,
    USAGE,
    UsageError,
    cmd_destroy,
    cmd_drift,
    cmd_plan,
    cmd_reconcile,
    cmd_run,
    cmd_synth,
    cmd_unlock,
)
from controller.environments import is_environment_file, load_all, policed
from controller.errors import EnvctlError, NotFound, SettingsError
from controller.settings import Settings, defaults_for, secret_values
from controller.store import iso
from controller.synth import parameter_problems
from controller.terraform import make_undumpable
from controller.types import Invalid

log = structlog.get_logger("envctl.cli")

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
