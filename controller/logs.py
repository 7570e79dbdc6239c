"""structlog setup: JSON lines on stdout, console rendering on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog


def redactor(secrets: Iterable[str]) -> structlog.typing.Processor:
    """A processor replacing every known secret value in an event's strings (and tracebacks) with ***."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {key: scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(item) for item in value]
        return value

    def process(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not values:
            return event
        return {key: scrub(item) for key, item in event.items()}

    return process


def configure(level: str = "info", json_output: bool | None = None, secrets: Iterable[str] = ()) -> None:
    """Configure structlog once for the process; `secrets` never appear in a log line."""
    if json_output is None:
        json_output = not sys.stdout.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
