"""Terraform state objects in S3, their lock entries, and envctl's inventory beside them (boto3).

After a successful destroy the environment's state object, its lock file or
digest entry in the lock table, its saved configuration and its inventory entry
are deleted, so a re-created environment starts clean.

Beside the inventory entry: the configuration of the last successful apply
(`envctl-config.tf.json`; a destroy runs with it, so today's stack code never
blocks destroying yesterday's environment) and, after a failed state upload,
the state Terraform could not write (`errored.tfstate`, pushed before any
other run).

The inventory entry (`{key_prefix}/{name}/envctl.json`) is written before the
plan of every apply and again after each successful apply: its spec,
what was applied, and which repository it came from. It outlives the status
database (a replica that takes over leadership, a lost volume), so envctl never
forgets an environment whose resources may exist: it adopts the entry and can
still destroy a removed preview or orphan a removed persistent environment.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import structlog

from controller import aws
from controller.settings import StateSettings

log = structlog.get_logger("envctl.state")


class StateFiles:
    """Read-only checks and post-destroy cleanup of state objects."""

    def __init__(self, settings: StateSettings) -> None:
        self.settings = settings
        self._s3 = aws.client("s3", region=settings.region, endpoint=settings.endpoint)
        self._dynamodb = (
            aws.client("dynamodb", region=settings.region, endpoint=settings.endpoint)
            if settings.lock == "dynamodb"
            else None
        )

    def check(self) -> None:
        """The bucket (and lock table) exist and are reachable; raise TransientError naming which not."""
        with aws.transient(f"state.bucket: {self.settings.bucket!r} is not reachable"):
            # A listing of our prefix, not HeadBucket: it works with a policy that scopes
            # s3:ListBucket to the key prefix, and the inventory needs exactly this permission.
            self._s3.list_objects_v2(Bucket=self.settings.bucket, Prefix=self.settings.folder(), MaxKeys=1)
        if self._dynamodb is not None:
            with aws.transient(f"state.lock_table: {self.settings.lock_table!r} is not reachable"):
                self._dynamodb.describe_table(TableName=self.settings.lock_table)

    def write_inventory(self, name: str, entry: dict[str, Any]) -> None:
        """Write (replace) one environment's inventory entry."""
        key = self.settings.inventory_key(name)
        body = json.dumps(entry, sort_keys=True, indent=1).encode()
        with aws.transient(f"cannot write the inventory entry {key}"):
            self._s3.put_object(
                Bucket=self.settings.bucket, Key=key, Body=body, ContentType="application/json"
            )

    def inventory_names(self) -> set[str]:
        """Names of every environment with an inventory entry under the key prefix.

        A failed listing raises TransientError: an unreadable inventory is not an empty one.
        """
        folder = self.settings.folder()
        with aws.transient(f"cannot list the inventory under s3://{self.settings.bucket}/{folder}"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.settings.bucket, Prefix=folder
            )
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        names = set()
        for key in keys:
            name, _, leaf = key[len(folder) :].partition("/")
            if leaf == "envctl.json":
                names.add(name)
        return names

    def read_inventory(self, name: str) -> dict[str, Any] | str:
        """One environment's inventory entry, or what is wrong with its content.

        An entry that cannot be fetched raises TransientError.
        """
        key = self.settings.inventory_key(name)
        with aws.transient(f"s3://{self.settings.bucket}/{key}: cannot be read"):
            body = self._s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
        try:
            entry = json.loads(body)
        except ValueError as error:
            return f"s3://{self.settings.bucket}/{key}: not JSON: {error}"
        if not isinstance(entry, dict):
            return f"s3://{self.settings.bucket}/{key}: expected a JSON object, got {type(entry).__name__}"
        return entry

    def put(self, key: str, body: bytes) -> None:
        """Write one object (a saved configuration, an errored state); TransientError on failure."""
        with aws.transient(f"cannot write s3://{self.settings.bucket}/{key}"):
            self._s3.put_object(Bucket=self.settings.bucket, Key=key, Body=body)

    def get(self, key: str) -> bytes | None:
        """One object's content, None when it does not exist; TransientError when it cannot be read."""
        with aws.transient(f"cannot read s3://{self.settings.bucket}/{key}"):
            try:
                body: bytes = self._s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
            except botocore.exceptions.ClientError as error:
                if aws.missing(error):
                    return None
                raise
        return body

    def remove(self, key: str) -> None:
        """Delete one object (absent is fine); TransientError on failure."""
        with aws.transient(f"cannot delete s3://{self.settings.bucket}/{key}"):
            self._s3.delete_object(Bucket=self.settings.bucket, Key=key)

    def exists(self, name: str) -> bool:
        """Whether Terraform ever wrote one environment's state object (nothing is managed until it does)."""
        key = self.settings.key(name)
        with aws.transient(f"cannot read state {key}"):
            try:
                self._s3.head_object(Bucket=self.settings.bucket, Key=key)
            except botocore.exceptions.ClientError as error:
                if aws.missing(error):
                    return False
                raise
        return True

    def delete(self, name: str) -> None:
        """Delete a destroyed environment's state object, lock digest and inventory entry."""
        key = self.settings.key(name)
        with aws.transient(f"cannot delete state {key}"):
            self._s3.delete_object(Bucket=self.settings.bucket, Key=key)
            if self.settings.lock == "s3":
                self._s3.delete_object(Bucket=self.settings.bucket, Key=f"{key}.tflock")
            if self._dynamodb is not None:
                self._dynamodb.delete_item(
                    TableName=self.settings.lock_table,
                    Key={"LockID": {"S": f"{self.settings.bucket}/{key}-md5"}},
                )
            self._s3.delete_object(Bucket=self.settings.bucket, Key=self.settings.config_key(name))
            # Last: while the entry exists, a later pass still knows resources may exist.
            self._s3.delete_object(Bucket=self.settings.bucket, Key=self.settings.inventory_key(name))
        log.info("state_deleted", key=key)
