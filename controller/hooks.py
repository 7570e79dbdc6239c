"""What the controller does around a stack's Terraform runs, when the stack asks for it.

A stack declares its hooks in the synthesized JSON, in a `//` comment that
Terraform ignores (`{"//": {"envctl": {...}}}`), so the configuration saved for
a destroy carries them too. Each hook is one thing Terraform cannot do alone:

- `adopt`: before an environment is created, a resource that already exists
  outside state (EKS recreates `/aws/eks/<cluster>/cluster` from late logs after
  a destroy) is imported with an `import` block instead of failing with
  ResourceAlreadyExistsException;
- `creates`: before the first apply, the region's VPC and Elastic IP quotas
  must leave room for what the environment adds;
- `pre_destroy`: load balancers, target groups and security groups the AWS
  Load Balancer Controller created at run time (not in state) are deleted, and
  waited for, before Terraform deletes subnets and the VPC;
- `post_destroy`: log groups EKS recreated after Terraform deleted them are
  deleted again.

Every call goes through `controller.aws` clients (timeouts, bounded retries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from controller import aws
from controller.errors import QuotaExceeded, TransientError

log = structlog.get_logger("envctl.hooks")

VPC_QUOTA = ("vpc", "L-F678F1CE", "VPCs per Region", 5)
EIP_QUOTA = ("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs", 5)
"""(service code, quota code, quota name, AWS default) of the quotas a new environment uses."""
ELBV2_CLUSTER_TAG = "elbv2.k8s.aws/cluster"


@dataclass(frozen=True)
class Adopt:
    address: str
    """The Terraform address that takes the existing resource."""
    log_group: str


@dataclass(frozen=True)
class Hooks:
    """The hooks one synthesized stack declares."""

    region: str
    role_arn: str | None = None
    adopt: tuple[Adopt, ...] = ()
    vpcs: int = 0
    elastic_ips: int = 0
    elbv2_cluster_tag: str | None = None
    post_destroy_log_groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, document: dict[str, Any]) -> Hooks | None:
        """The hooks a synthesized document declares, or None."""
        raw = document.get("//", {}).get("envctl")
        if not isinstance(raw, dict):
            return None
        creates = raw.get("creates", {})
        return cls(
            region=str(raw["region"]),
            role_arn=raw.get("role_arn"),
            adopt=tuple(Adopt(str(a["address"]), str(a["log_group"])) for a in raw.get("adopt", [])),
            vpcs=int(creates.get("vpcs", 0)),
            elastic_ips=int(creates.get("elastic_ips", 0)),
            elbv2_cluster_tag=raw.get("pre_destroy", {}).get("elbv2_cluster_tag"),
            post_destroy_log_groups=tuple(raw.get("post_destroy", {}).get("log_groups", [])),
        )


class StackHooks:
    """Runs hooks against AWS for one controller (region and role come from each stack)."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        quota_check: bool = True,
        cleanup_timeout_seconds: float = 600.0,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.quota_check = quota_check
        self.cleanup_timeout_seconds = cleanup_timeout_seconds
        self.poll_seconds = poll_seconds
        self.sleep = sleep
        self.clock = clock

    def _client(self, service: str, hooks: Hooks) -> Any:
        return aws.client(
            service, region=hooks.region, endpoint=self.endpoint, role_arn=hooks.role_arn, attempts=2
        )

    # --- before the first apply -----------------------------------------------------------------

    def adopt(self, document: dict[str, Any], hooks: Hooks) -> list[str]:
        """Add an `import` block for each declared log group that exists; return their names."""
        logs = self._client("logs", hooks)
        imported = []
        for item in hooks.adopt:
            with aws.transient(f"cannot check whether log group {item.log_group} exists"):
                found = logs.describe_log_groups(logGroupNamePrefix=item.log_group, limit=50)["logGroups"]
            if any(group["logGroupName"] == item.log_group for group in found):
                imports = document.setdefault("import", [])
                if not any(i.get("to") == item.address for i in imports):
                    imports.append({"to": item.address, "id": item.log_group})
                imported.append(item.log_group)
        return imported

    def check_quotas(self, hooks: Hooks, name: str) -> None:
        """QuotaExceeded when creating the environment would pass the region's VPC or EIP quota."""
        if not self.quota_check or not (hooks.vpcs or hooks.elastic_ips):
            return
        ec2 = self._client("ec2", hooks)
        quotas = self._client("service-quotas", hooks)
        with aws.transient(f"cannot read the quotas of {hooks.region}"):
            used = {
                VPC_QUOTA: len(ec2.describe_vpcs()["Vpcs"]),
                EIP_QUOTA: len(
                    ec2.describe_addresses(Filters=[{"Name": "domain", "Values": ["vpc"]}])["Addresses"]
                ),
            }
            needed = {VPC_QUOTA: hooks.vpcs, EIP_QUOTA: hooks.elastic_ips}
            for quota, more in needed.items():
                if not more:
                    continue
                service, code, title, default = quota
                limit = self._quota_value(quotas, service, code, default)
                if used[quota] + more > limit:
                    raise QuotaExceeded(
                        f"{name}: creating it needs {more} more of quota {code} ({title}) in "
                        f"{hooks.region}: {used[quota]} of {limit:g} are in use. Raise it in the Service "
                        f"Quotas console or with `aws service-quotas request-service-quota-increase "
                        f"--service-code {service} --quota-code {code} --desired-value "
                        f"{used[quota] + more} --region {hooks.region}`, or destroy an environment"
                    )

    @staticmethod
    def _quota_value(quotas: Any, service: str, code: str, default: int) -> float:
        """The account's applied value, else AWS's default value, else the documented default.

        Only the account's own value is required to answer: without it (NoSuchResource) the
        default value is read, and when even that cannot be read the documented default is
        used, with a warning, rather than blocking every creation on an advisory check.
        """
        try:
            return float(quotas.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchResourceException":
                raise
        try:
            return float(
                quotas.get_aws_default_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"]
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("quota_default_assumed", quota=code, value=default, error=str(error))
            return float(default)

    # --- around a destroy -----------------------------------------------------------------------

    def before_destroy(self, hooks: Hooks) -> dict[str, int]:
        """Delete what the load balancer controller left of this cluster; wait until it is gone."""
        tag = hooks.elbv2_cluster_tag
        if not tag:
            return {}
        elbv2 = self._client("elbv2", hooks)
        ec2 = self._client("ec2", hooks)
        with aws.transient(f"cannot delete the load balancers of {tag}"):
            balancers = self._tagged(
                elbv2, "describe_load_balancers", "LoadBalancers", "LoadBalancerArn", tag
            )
            for arn in balancers:
                elbv2.delete_load_balancer(LoadBalancerArn=arn)
            self._wait(
                lambda: (
                    not self._tagged(
                        elbv2, "describe_load_balancers", "LoadBalancers", "LoadBalancerArn", tag
                    )
                ),
                f"load balancers of {tag} to be deleted",
            )
            groups = self._tagged(elbv2, "describe_target_groups", "TargetGroups", "TargetGroupArn", tag)
            for arn in groups:
                elbv2.delete_target_group(TargetGroupArn=arn)
            filters = [{"Name": f"tag:{ELBV2_CLUSTER_TAG}", "Values": [tag]}]
            security_groups = [
                g["GroupId"] for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
            ]
            remaining = list(security_groups)

            def delete_security_groups() -> bool:
                # A load balancer's network interfaces hold its security groups for a while.
                for group in list(remaining):
                    try:
                        ec2.delete_security_group(GroupId=group)
                        remaining.remove(group)
                    except ClientError as error:
                        if error.response.get("Error", {}).get("Code") == "InvalidGroup.NotFound":
                            remaining.remove(group)
                        elif error.response.get("Error", {}).get("Code") != "DependencyViolation":
                            raise
                return not remaining

            self._wait(delete_security_groups, f"security groups of {tag} to be released")
        deleted = {
            "load_balancers": len(balancers),
            "target_groups": len(groups),
            "security_groups": len(security_groups),
        }
        if any(deleted.values()):
            log.info("load_balancers_deleted", cluster=tag, **deleted)
        return deleted

    def after_destroy(self, hooks: Hooks) -> list[str]:
        """Delete the declared log groups that exist again (EKS writes late control-plane logs)."""
        if not hooks.post_destroy_log_groups:
            return []
        logs = self._client("logs", hooks)
        deleted = []
        for name in hooks.post_destroy_log_groups:
            try:
                logs.delete_log_group(logGroupName=name)
                deleted.append(name)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise TransientError(f"cannot delete log group {name}: {error}") from error
            except BotoCoreError as error:
                raise TransientError(f"cannot delete log group {name}: {error}") from error
        if deleted:
            log.info("recreated_log_groups_deleted", log_groups=deleted)
        return deleted

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _tagged(elbv2: Any, operation: str, key: str, arn_key: str, cluster: str) -> list[str]:
        """ARNs of the load balancers or target groups tagged elbv2.k8s.aws/cluster=<cluster>."""
        arns = [item[arn_key] for page in elbv2.get_paginator(operation).paginate() for item in page[key]]
        tagged = []
        for start in range(0, len(arns), 20):  # DescribeTags takes at most 20 ARNs
            for description in elbv2.describe_tags(ResourceArns=arns[start : start + 20])["TagDescriptions"]:
                if {"Key": ELBV2_CLUSTER_TAG, "Value": cluster} in description.get("Tags", []):
                    tagged.append(description["ResourceArn"])
        return tagged

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = self.clock() + self.cleanup_timeout_seconds
        while not done():
            if self.clock() >= deadline:
                raise TransientError(f"timed out after {self.cleanup_timeout_seconds:g} s waiting for {what}")
            self.sleep(self.poll_seconds)
