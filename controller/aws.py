"""boto3 clients from one place, each with explicit timeouts and a bounded retry budget.

boto3's defaults (60 s connect and read timeouts, retries on top) would let one
hung call hold a thread for minutes: a leader would keep acting past its lease,
a pass would stall on a state check. Every client envctl makes comes from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from controller.errors import TransientError

DEFAULT_CONNECT_SECONDS = 5.0
DEFAULT_READ_SECONDS = 30.0
DEFAULT_ATTEMPTS = 4


def client(
    service: str,
    *,
    region: str,
    endpoint: str | None = None,
    connect_seconds: float = DEFAULT_CONNECT_SECONDS,
    read_seconds: float = DEFAULT_READ_SECONDS,
    attempts: int = DEFAULT_ATTEMPTS,
    role_arn: str | None = None,
) -> Any:
    """A boto3 client for `service`; `attempts` counts the first try (1: no retry at all).

    With `role_arn`, the client acts as that role (one STS AssumeRole, session `envctl`).
    """
    config = Config(
        connect_timeout=connect_seconds,
        read_timeout=read_seconds,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )
    session = boto3.session.Session()
    if role_arn:
        sts = session.client("sts", region_name=region, endpoint_url=endpoint or None, config=config)
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="envctl")["Credentials"]
        session = boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
    return session.client(  # type: ignore[call-overload]
        service, region_name=region, endpoint_url=endpoint or None, config=config
    )


@contextmanager
def transient(what: str) -> Iterator[None]:
    """An AWS call that fails (an error answer, a timeout, no connection) is a TransientError
    saying `what` failed: retried with backoff, never taken for an answer."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise TransientError(f"{what}: {error}") from error


def missing(error: ClientError) -> bool:
    """Whether S3 answered that the object does not exist."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
