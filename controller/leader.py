"""Leader election on a DynamoDB lease: of several replicas, exactly one acts.

The lease is one item (`name`) holding the holder's id and an expiry time. It
is taken or renewed with a conditional write that succeeds only when the item
is absent, expired, or already ours, so two replicas can never both hold it.
The leader renews every third of the lease; a replica that cannot renew stops
acting before its lease runs out. Released on clean shutdown. The item also
carries the holder's API URL, so followers can hand requests to the leader.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import structlog

from controller.errors import SettingsError
from controller.settings import ApiSettings, LeaderSettings

log = structlog.get_logger("envctl.leader")


WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - recognising a wildcard, not binding one


def advertise_url(leader: LeaderSettings, api: ApiSettings, port: int) -> str:
    """The URL other replicas reach this one's API at (see `LeaderSettings.advertise_url`)."""
    explicit = leader.advertise_url or os.environ.get("ENVCTL_ADVERTISE_URL")
    if explicit:
        if not re.fullmatch(r"https?://[^/\s]+/?", explicit):
            raise SettingsError(
                f"ENVCTL_ADVERTISE_URL: {explicit!r} is not allowed; "
                "use an http(s) URL with no path, e.g. http://10.0.3.7:8080"
            )
        return explicit.rstrip("/")
    host = api.host
    if host in WILDCARDS:
        # In a pod the hostname resolves to the pod's IP; the chart passes POD_IP explicitly.
        host = os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Lease:
    """Acquire, renew and release one lease; `is_leader` is safe to read from any thread."""

    def __init__(
        self,
        settings: LeaderSettings,
        *,
        region: str,
        endpoint: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        extra: dict[str, Any] = {"region_name": region}
        if endpoint:
            extra["endpoint_url"] = endpoint
        self._db = boto3.client("dynamodb", **extra)
        self._clock = clock
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[bool], None] = lambda leader: None
        self.url: str | None = None
        """This replica's API URL, written into the lease while it leads."""
        self._leader_url: tuple[float, str | None] = (float("-inf"), None)

    @property
    def is_leader(self) -> bool:
        # A margin of one renewal interval: stop acting before anyone else may start.
        return self._clock() < self._valid_until - self.settings.lease_seconds / 3

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when someone else holds a live one."""
        now = self._clock()
        item = {
            "name": {"S": self.settings.name},
            "holder": {"S": self.identity},
            "expires_at": {"N": repr(now + self.settings.lease_seconds)},
        }
        if self.url:
            item["url"] = {"S": self.url}
        try:
            self._db.put_item(
                TableName=self.settings.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#n) OR expires_at < :now OR holder = :me",
                ExpressionAttributeNames={"#n": "name"},
                ExpressionAttributeValues={":now": {"N": repr(now)}, ":me": {"S": self.identity}},
            )
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            log.error("lease_write_failed", error=str(error))
            return False
        except botocore.exceptions.BotoCoreError as error:
            log.error("lease_write_failed", error=str(error))
            return False
        self._valid_until = now + self.settings.lease_seconds
        return True

    def holder(self) -> str | None:
        item = self._db.get_item(TableName=self.settings.table, Key={"name": {"S": self.settings.name}}).get(
            "Item"
        )
        return item["holder"]["S"] if item else None

    def leader_url(self, max_age: float = 2.0) -> str | None:
        """The API URL of the live leader when it is another replica; None otherwise or unknown.

        Read consistently and kept for `max_age` seconds, so a burst of requests costs one read.
        """
        read_at, url = self._leader_url
        now = self._clock()
        if now - read_at < max_age:
            return url
        url = None
        try:
            item = self._db.get_item(
                TableName=self.settings.table, Key={"name": {"S": self.settings.name}}, ConsistentRead=True
            ).get("Item")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            log.warning("lease_read_failed", error=str(error))
            item = None
        if (
            item
            and item["holder"]["S"] != self.identity
            and float(item["expires_at"]["N"]) > now
            and "url" in item
        ):
            url = item["url"]["S"]
        self._leader_url = (now, url)
        return url

    def release(self) -> None:
        """Give the lease up at once so a follower takes over without waiting for expiry."""
        self._valid_until = 0.0
        try:
            self._db.delete_item(
                TableName=self.settings.table,
                Key={"name": {"S": self.settings.name}},
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": {"S": self.identity}},
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return
        log.info("lease_released", holder=self.identity)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="envctl-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        leading = False
        while not self._stop.is_set():
            self.try_acquire()
            if self.is_leader != leading:
                leading = self.is_leader
                log.info("leadership_changed", leader=leading, holder=self.identity)
                self.on_change(leading)
            self._stop.wait(self.settings.lease_seconds / 6)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release()
