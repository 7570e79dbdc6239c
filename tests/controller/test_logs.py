"""Logging: one JSON object per line from every thread, envctl's events and the libraries' alike."""

from __future__ import annotations

import io
import json
import logging
import threading

import structlog

from controller import logs


def test_lines_stay_whole_across_threads_and_sources():
    """Eight threads, half through structlog and half through stdlib logging, 200 lines each: every
    line parses, libraries' lines carry their logger's name, secrets are redacted, levels filter."""
    stream = io.StringIO()
    logs.configure("info", json_output=True, secrets=["hunter2-secret"], stream=stream)
    try:

        def ours(n: int) -> None:
            log = structlog.get_logger("envctl.test")
            for i in range(200):
                log.info("ours", thread=n, i=i, note="token hunter2-secret")
                log.debug("hidden")

        def theirs(n: int) -> None:
            library = logging.getLogger("somelibrary")
            for i in range(200):
                library.warning("theirs %d %d hunter2-secret", n, i)
                library.debug("hidden")

        threads = [threading.Thread(target=ours if n % 2 else theirs, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = stream.getvalue().splitlines()
        events = [json.loads(line) for line in lines]
        assert len(events) == 1600
        assert sum(e["event"] == "ours" for e in events) == 800
        library = [e for e in events if e.get("logger") == "somelibrary"]
        assert len(library) == 800 and all(e["level"] == "warning" for e in library)
        assert "hunter2-secret" not in stream.getvalue()
        assert not any(e["event"] == "hidden" for e in events)
    finally:
        # Back to structlog's defaults for the other tests (they read logs from captured stdout).
        structlog.reset_defaults()
        logging.getLogger().handlers = []
