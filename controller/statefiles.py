"""Terraform state objects in S3 and their DynamoDB lock-table entries (boto3).

After a successful destroy the environment's state object and its digest entry
in the lock table are deleted, so a re-created environment starts clean.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import structlog

from controller.errors import TransientError
from controller.settings import StateSettings

log = structlog.get_logger("envctl.state")


class StateFiles:
    """Read-only checks and post-destroy cleanup of state objects."""

    def __init__(self, settings: StateSettings) -> None:
        self.settings = settings
        extra: dict[str, Any] = {"region_name": settings.region}
        if settings.endpoint:
            extra["endpoint_url"] = settings.endpoint
        self._s3 = boto3.client("s3", **extra)
        self._dynamodb = boto3.client("dynamodb", **extra) if settings.lock == "dynamodb" else None

    def check(self) -> None:
        """The bucket (and lock table) exist and are reachable; raise TransientError naming which not."""
        try:
            self._s3.head_bucket(Bucket=self.settings.bucket)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise TransientError(
                f"state.bucket: {self.settings.bucket!r} is not reachable: {error}"
            ) from error
        if self._dynamodb is not None:
            try:
                self._dynamodb.describe_table(TableName=self.settings.lock_table)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
                raise TransientError(
                    f"state.lock_table: {self.settings.lock_table!r} is not reachable: {error}"
                ) from error

    def delete(self, key: str) -> None:
        """Delete a destroyed environment's state object and lock digest."""
        try:
            self._s3.delete_object(Bucket=self.settings.bucket, Key=key)
            if self.settings.lock == "s3":
                self._s3.delete_object(Bucket=self.settings.bucket, Key=f"{key}.tflock")
            if self._dynamodb is not None:
                self._dynamodb.delete_item(
                    TableName=self.settings.lock_table,
                    Key={"LockID": {"S": f"{self.settings.bucket}/{key}-md5"}},
                )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise TransientError(f"cannot delete state {key}: {error}") from error
        log.info("state_deleted", key=key)
