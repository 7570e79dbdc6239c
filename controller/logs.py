"""structlog setup: JSON lines on stdout, console rendering on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from controller.secrets import known_values, mask

SECRET_HEADERS = re.compile(
    r"(?i)\b(authorization|x-amz-security-token|x-amz-credential|x-hub-signature-256|x-gitlab-token|"
    r"private-token|cookie|set-cookie)(['\"]?\s*[:=]\s*)(b?'[^']*'|b?\"[^\"]*\"|[^,}\r\n]+)"
)
"""Credential-carrying headers as the HTTP libraries print them at debug (botocore's request dump,
urllib3's): their values never reach a log line, whatever the level. Secrets fetched at run time
(IRSA session tokens) are in no list of known values, so they are caught by name."""


def _masked(match: re.Match[str]) -> str:
    value = match[3]
    quote = value.lstrip("b")[:1]
    shown = (
        f"{value[: len(value) - len(value.lstrip('b'))]}{quote}***{quote}" if quote in ("'", '"') else "***"
    )
    return f"{match[1]}{match[2]}{shown}"


def redactor(secrets: Iterable[str]) -> structlog.typing.Processor:
    """A processor replacing every known secret value, and every credential header's value, in an
    event's strings (and tracebacks) with ***."""
    values = known_values(secrets)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return SECRET_HEADERS.sub(_masked, mask(value, values))
        if isinstance(value, dict):
            return {key: scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(item) for item in value]
        return value

    def process(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {key: scrub(item) for key, item in event.items()}

    return process


def configure(
    level: str = "info",
    json_output: bool | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once for the process; `secrets` never appear in a log line.

    `stream`: stdout for the daemon and `reconcile`; commands whose stdout is their answer
    (`status`, `plan`, `synth`...) log to stderr instead.
    """
    stream = stream or sys.stdout
    if json_output is None:
        json_output = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # One writer for every line: envctl's events and the libraries' stdlib records (APScheduler,
    # botocore, githubkit...) all go through one logging handler, whose lock keeps lines whole
    # (two writers on one stream interleave lines written from different threads).
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redactor(secrets),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Records from the libraries: the same fields, the logger's name, the same redaction.
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
                redactor(secrets),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    # Their routine chatter ("Running job ...", every poll) is not news at info.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("apscheduler", "botocore", "boto3", "urllib3", "httpx", "httpcore", "git", "hishel"):
        logging.getLogger(name).setLevel(quiet)
