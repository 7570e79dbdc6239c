"""Leader election on a DynamoDB lease: of several replicas, exactly one acts.

The lease is one item (`name`) holding the holder's id and a token that
changes with every renewal. It is taken or renewed with a conditional write
that succeeds only when the item is absent, already ours, or unchanged since a
follower watched it for a whole lease, so two replicas can never both hold it.
The leader renews every ninth of the lease with calls that time out in
seconds; a replica whose renewals fail or hang stops acting a third of the
lease after its last success, long before anyone may take over. Released on clean shutdown. The item also
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

import botocore.exceptions
import structlog

from controller import aws
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
    """Acquire, renew and release one lease; `is_leader` is safe to read from any thread.

    Validity is judged on this process's monotonic clock, never by comparing wall-clock times
    written by other hosts: the leader counts from its last successful renewal, and a follower
    takes over only after it has watched the lease's renewal token stay unchanged for a whole
    `lease_seconds` (as Kubernetes' leader election does). The item's `expires_at` is for people.
    """

    def __init__(
        self,
        settings: LeaderSettings,
        *,
        region: str,
        endpoint: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # A hung call must not outlive a third of the lease: short timeouts, no retries.
        seconds = max(0.5, min(2.0, settings.lease_seconds / 10))
        self._db = aws.client(
            "dynamodb",
            region=region,
            endpoint=endpoint,
            connect_seconds=seconds,
            read_seconds=seconds,
            attempts=1,
        )
        self._clock = clock
        self._renewed_at: float | None = None
        self._token = ""
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[bool], None] = lambda leader: None
        self.url: str | None = None
        """This replica's API URL, written into the lease while it leads."""
        self._leader_url: tuple[float, str | None] = (float("-inf"), None)

    @property
    def renew_every(self) -> float:
        """Renewals run at a ninth of the lease: two may fail before leadership is given up."""
        return self.settings.lease_seconds / 9

    @property
    def is_leader(self) -> bool:
        # Stop acting a third of the lease after the last successful renewal, long before any
        # follower may take over (a whole lease of watching an unchanged token).
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.settings.lease_seconds / 3

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when someone else holds a live one or the table fails."""
        started = self._clock()
        token = uuid.uuid4().hex
        item = {
            "name": {"S": self.settings.name},
            "holder": {"S": self.identity},
            "token": {"S": token},
            "expires_at": {"N": repr(time.time() + self.settings.lease_seconds)},
        }
        if self.url:
            item["url"] = {"S": self.url}
        try:
            condition = self._condition()
            if condition is None:
                return False
            expression, names, values = condition
            self._db.put_item(
                TableName=self.settings.table,
                Item=item,
                ConditionExpression=expression,
                **({"ExpressionAttributeNames": names} if names else {}),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                # Someone else holds it now: watch it like any follower.
                self._renewed_at = None
            else:
                log.error("lease_write_failed", error=str(error))
            return False
        except botocore.exceptions.BotoCoreError as error:
            log.error("lease_write_failed", error=str(error))
            return False
        self._renewed_at = started
        self._token = token
        return True

    def _condition(self) -> tuple[str, dict[str, str], dict[str, Any]] | None:  # noqa: PLR0911 - one guard clause per state of the lease
        """The write condition that takes or renews the lease now (expression, names, values), or None."""
        mine: tuple[str, dict[str, str], dict[str, Any]] = ("holder = :me", {}, {":me": {"S": self.identity}})
        if self._renewed_at is not None:
            # Ours, as far as we know: renew (the condition fails if someone took it meanwhile).
            return mine
        current = self._db.get_item(
            TableName=self.settings.table, Key={"name": {"S": self.settings.name}}, ConsistentRead=True
        ).get("Item")
        if current is None:
            return "attribute_not_exists(#n)", {"#n": "name"}, {}
        if current["holder"]["S"] == self.identity:
            return mine
        seen = (current["holder"]["S"], current.get("token", {}).get("S", ""))
        now = self._clock()
        if seen != self._observed:
            # The holder renewed (or changed) since we last looked: start watching again.
            self._observed, self._observed_at = seen, now
            return None
        if now - self._observed_at < self.settings.lease_seconds:
            return None
        # Unchanged for a whole lease on our own clock: the holder is gone. Take over, unless
        # it renewed in the meantime (the write checks the token we watched).
        values = {":holder": {"S": seen[0]}, ":token": {"S": seen[1]}}
        if seen[1]:
            return "holder = :holder AND #t = :token", {"#t": "token"}, values
        return (
            "holder = :holder AND attribute_not_exists(#t)",
            {"#t": "token"},
            {":holder": values[":holder"]},
        )

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
        # Whether that leader is alive is not judged here: a dead one does not answer, and the
        # request is served from this replica's copy.
        if item and item["holder"]["S"] != self.identity and "url" in item:
            url = item["url"]["S"]
        self._leader_url = (now, url)
        return url

    def release(self) -> None:
        """Give the lease up at once so a follower takes over without waiting for expiry."""
        self._renewed_at = None
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
            self._stop.wait(self.renew_every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release()
