"""CloudWatch Container Insights log groups, with retention, for a Fargate-only cluster.

Why log groups and not the `amazon-cloudwatch-observability` add-on: that add-on
runs the CloudWatch agent and Fluent Bit as DaemonSets, and Fargate runs no
DaemonSets. On Fargate, pod logs leave through the built-in Fluent Bit log
router (the `aws-logging` ConfigMap, see `stack.baseline`) into `application`,
and the ADOT collector writes Container Insights metrics into `performance`.
The stack creates both up front so they have a retention period and are
destroyed with the environment. There is no `dataplane` group: only node
agents write it, and a Fargate cluster has none.
"""

from __future__ import annotations

from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from constructs import Construct

from stack.config import LOG_RETENTION_DAYS, StackConfig

INSIGHTS_LOG_KINDS = ("application", "performance")


class Observability(Construct):
    """The Container Insights log groups of the cluster."""

    def __init__(self, scope: Construct, id_: str, *, config: StackConfig) -> None:
        super().__init__(scope, id_)
        names = config.names
        self.log_groups: dict[str, CloudwatchLogGroup] = {}
        for kind in INSIGHTS_LOG_KINDS:
            name = names.insights_log_group(kind)
            self.log_groups[kind] = CloudwatchLogGroup(
                self,
                f"insights_{kind}",
                name=name,
                retention_in_days=LOG_RETENTION_DAYS,
                tags={"Name": name},
            )
