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


def test_credential_headers_are_redacted_at_every_level_even_when_unknown():
    """botocore's debug dump of a request with a session token fetched at run time (in no list of
    known secrets): the token, the signature and a webhook token never reach the line."""
    from controller.logs import redactor

    process = redactor([])
    line = (
        "Sending http request: <AWSPreparedRequest method=PUT, headers={'X-Amz-Security-Token': "
        "b'IQoJb3JpZ2luX2VjE', "
        "'Authorization': b'AWS4-HMAC-SHA256 Credential=ASIA/20261202, Signature=ab12', "
        "'User-Agent': b'Boto3/1.40'}> X-Gitlab-Token: glpat-secret"
    )
    event = process(None, "debug", {"event": line, "nested": {"headers": line}})
    for text in (event["event"], event["nested"]["headers"]):
        assert "IQoJb3JpZ2luX2VjE" not in text and "Signature=ab12" not in text and "glpat-secret" not in text
        assert "'User-Agent': b'Boto3/1.40'" in text and "'X-Amz-Security-Token': b'***'" in text


def test_the_synth_worker_sees_no_secret_of_envctl():
    """The stack's process gets what Python, Node.js and jsii need, not tokens or AWS credentials."""
    from controller.synth import worker_environment

    given = {
        "PATH": "/usr/bin",
        "HOME": "/home/envctl",
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": "/opt/jsii-cache",
        "ENVCTL_GITHUB_TOKEN": "ghp_x",
        "ENVCTL_API_TOKEN": "t",
        "GIT_TOKEN": "g",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "st",
    }
    assert worker_environment(given) == {
        "PATH": "/usr/bin",
        "HOME": "/home/envctl",
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": "/opt/jsii-cache",
    }
