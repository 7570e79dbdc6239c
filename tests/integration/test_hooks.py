"""The controller's side of the platform stack's hooks, against moto's EC2, ELBv2, Logs and
Service Quotas: quota headroom before a creation, adoption of a leftover log group, clean-up
of load balancers the AWS Load Balancer Controller left, deletion of a recreated log group.

Each test works in a region of its own, so what other tests leave on the shared moto server
does not count against its quotas.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.errors import QuotaExceeded, TransientError
from controller.hooks import Hooks, StackHooks
from controller.synth import SynthWorker
from controller.types import Phase, Reason
from tests.integration.conftest import Aws, Repo, World, build_world, make_settings, preview
from tests.integration.local_http import Handler, LocalServer, answer


def client(aws: Aws, service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=aws.endpoint, region_name=region)


@pytest.fixture
def hooked(tmp_path: Path, repo: Repo, aws: Aws, toolchain: Any, demo_worker: SynthWorker) -> Iterator[World]:
    settings = make_settings(tmp_path, repo, aws, toolchain, hooks={"endpoint": aws.endpoint})
    yield from build_world(settings, repo, aws, demo_worker)


def hooked_preview(pr: int, region: str) -> dict[str, Any]:
    spec = preview(pr, platform_hooks=True)
    spec["region"] = region
    return spec


def fill_vpc_quota(aws: Aws, region: str) -> list[str]:
    """Create VPCs until the region holds 5 (moto's default VPC included); return those made."""
    ec2 = client(aws, "ec2", region)
    made = []
    while len(ec2.describe_vpcs()["Vpcs"]) < 5:
        made.append(ec2.create_vpc(CidrBlock=f"10.{len(made) + 10}.0.0/16")["Vpc"]["VpcId"])
    return made


# --- quotas ------------------------------------------------------------------------------------


def test_full_vpc_quota_fails_the_creation_before_any_terraform(hooked: World):
    """Five VPCs of five: Failed/QuotaExceeded naming the quota, its value and how to raise it;
    no Terraform ran (no state, no provider download); once a VPC goes, the retry creates it."""
    region = "eu-north-1"
    made = fill_vpc_quota(hooked.aws, region)
    hooked.repo.write("pr31", hooked_preview(31, region))
    started = hooked.reconciler.terraform.processes_started
    result = hooked.reconciler.run_pass()
    assert result.outcomes == {"pr31": "failed"}
    record = hooked.store.load("pr31")
    assert (record.phase, record.reason) == (Phase.FAILED, Reason.QUOTA_EXCEEDED)
    for fragment in ("L-F678F1CE", "VPCs per Region", "5 of 5 are in use", "request-service-quota-increase"):
        assert fragment in record.message
    assert "--region eu-north-1" in record.message
    assert hooked.reconciler.terraform.processes_started == started
    assert hooked.aws.objects() == []
    assert record.next_attempt_at > hooked.now[0]

    client(hooked.aws, "ec2", region).delete_vpc(VpcId=made[-1])
    hooked.now[0] = record.next_attempt_at + 1
    assert hooked.reconciler.run_pass().outcomes == {"pr31": "applied"}
    assert hooked.phase("pr31") == "Ready"


def test_quota_check_counts_elastic_ips_and_only_runs_before_a_creation(hooked: World, aws: Aws):
    """Five Elastic IPs in use: refused (default value 5, named); an applied environment is never
    checked again, so a full account does not stop its updates."""
    region = "ap-south-1"
    hooks = StackHooks(endpoint=aws.endpoint)
    ec2 = client(aws, "ec2", region)
    for _ in range(5):
        ec2.allocate_address(Domain="vpc")
    with pytest.raises(QuotaExceeded) as info:
        hooks.check_quotas(Hooks(region=region, vpcs=1, elastic_ips=1), "pr32")
    assert "L-0263D0A3" in str(info.value) and "5 of 5" in str(info.value)
    # Nothing asked, nothing checked; the check can be turned off.
    StackHooks(endpoint=aws.endpoint).check_quotas(Hooks(region=region), "pr32")
    StackHooks(endpoint=aws.endpoint, quota_check=False).check_quotas(
        Hooks(region=region, vpcs=1, elastic_ips=1), "pr32"
    )

    # Created while there was room; later applies do not check quotas.
    hooked.repo.write("pr33", hooked_preview(33, "ca-central-1"))
    assert hooked.reconciler.run_pass().outcomes == {"pr33": "applied"}
    fill_vpc_quota(aws, "ca-central-1")
    hooked.repo.write(
        "pr33",
        {**hooked_preview(33, "ca-central-1"), "parameters": {"platform_hooks": True, "revision": "2"}},
    )
    assert hooked.reconciler.run_pass().outcomes == {"pr33": "applied"}


def test_unreachable_quota_api_is_transient_not_a_verdict(aws: Aws):
    """An AWS error while reading quotas is a TransientError (retried), never QuotaExceeded."""
    hooks = StackHooks(endpoint="http://127.0.0.1:9", cleanup_timeout_seconds=1)
    with pytest.raises(TransientError, match="cannot read the quotas of eu-south-1") as info:
        hooks.check_quotas(Hooks(region="eu-south-1", vpcs=1), "pr34")
    assert not isinstance(info.value, QuotaExceeded)


# --- adoption ----------------------------------------------------------------------------------


def test_existing_log_group_is_imported_not_created(aws: Aws, toolchain: Any, tmp_path: Path):
    """A log group left from an earlier life of the environment gets an `import` block (one
    DescribeLogGroups); none is added when it does not exist; Terraform accepts the result."""
    region = "eu-west-3"
    name = "/aws/eks/envctl-pr35/cluster"
    document: dict[str, Any] = {
        "//": {
            "envctl": {
                "region": region,
                "adopt": [{"address": "null_resource.cluster", "log_group": name}],
            }
        },
        "terraform": {"required_providers": {"null": {"source": "hashicorp/null", "version": "2.1.2"}}},
        "resource": {"null_resource": {"cluster": {"triggers": {"name": "envctl-pr35-cluster"}}}},
    }
    hooks = StackHooks(endpoint=aws.endpoint)
    parsed = Hooks.of(document)
    assert parsed is not None
    logs = client(aws, "logs", region)
    # A group whose name merely starts the same is not it.
    logs.create_log_group(logGroupName=name + "-old")
    assert hooks.adopt(document, parsed) == []
    assert "import" not in document

    logs.create_log_group(logGroupName=name)
    assert hooks.adopt(document, parsed) == [name]
    assert hooks.adopt(document, parsed) == [name]  # idempotent: one block per address
    assert document["import"] == [{"to": "null_resource.cluster", "id": name}]

    workdir = tmp_path / "tf"
    workdir.mkdir()
    (workdir / "main.tf.json").write_text(json.dumps(document))
    env = {"TF_CLI_CONFIG_FILE": str(toolchain.cli_config), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for command in (["init", "-input=false", "-backend=false"], ["validate", "-json"]):
        done = subprocess.run(
            [str(toolchain.terraform), *command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["valid"] is True


def test_no_hooks_declared_is_none():
    """A stack that declares nothing gets no hook."""
    assert Hooks.of({"//": {"metadata": {}}}) is None
    assert Hooks.of({}) is None


# --- destroy -----------------------------------------------------------------------------------


def make_leftovers(aws: Aws, region: str, cluster: str) -> dict[str, Any]:
    """What the AWS Load Balancer Controller leaves: an ALB, a target group, a `k8s-*` security
    group, tagged with the cluster; and the same for another cluster and an untagged ALB."""
    ec2 = client(aws, "ec2", region)
    elbv2 = client(aws, "elbv2", region)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(zones)
    ]
    made: dict[str, Any] = {"vpc": vpc}
    for owner in (cluster, "envctl-someone-else", None):
        tags = [{"Key": "elbv2.k8s.aws/cluster", "Value": owner}] if owner else []
        label = owner or "untagged"
        group = ec2.create_security_group(
            GroupName=f"k8s-{label}",
            Description="load balancer",
            VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}] if tags else [],
        )["GroupId"]
        balancer = elbv2.create_load_balancer(
            Name=f"k8s-{label}"[:32],
            Subnets=subnets,
            SecurityGroups=[group],
            Tags=tags or [{"Key": "x", "Value": "y"}],
        )["LoadBalancers"][0]["LoadBalancerArn"]
        target = elbv2.create_target_group(
            Name=f"k8s-tg-{label}"[:32],
            Protocol="HTTP",
            Port=80,
            VpcId=vpc,
            TargetType="ip",
            Tags=tags or [{"Key": "x", "Value": "y"}],
        )["TargetGroups"][0]["TargetGroupArn"]
        made[label] = {"security_group": group, "load_balancer": balancer, "target_group": target}
    return made


def test_destroy_deletes_the_load_balancers_the_controller_left_and_a_recreated_log_group(hooked: World):
    """Before the destroy: this cluster's ALB, target group and security group are deleted (other
    clusters' and untagged ones stay); after it, the control-plane log group EKS recreated goes."""
    region = "eu-central-1"
    hooked.repo.write("pr36", hooked_preview(36, region))
    assert hooked.reconciler.run_pass().outcomes == {"pr36": "applied"}
    made = make_leftovers(hooked.aws, region, "envctl-pr36")
    logs = client(hooked.aws, "logs", region)
    logs.create_log_group(logGroupName="/aws/eks/envctl-pr36/cluster")  # late control-plane logs

    hooked.repo.write("pr36", hooked_preview(36, region) | {"state": "closed"})
    assert hooked.reconciler.run_pass().outcomes == {"pr36": "destroyed"}

    elbv2 = client(hooked.aws, "elbv2", region)
    ec2 = client(hooked.aws, "ec2", region)
    balancers = {b["LoadBalancerArn"] for b in elbv2.describe_load_balancers()["LoadBalancers"]}
    targets = {t["TargetGroupArn"] for t in elbv2.describe_target_groups()["TargetGroups"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    mine = made["envctl-pr36"]
    assert mine["load_balancer"] not in balancers
    assert mine["target_group"] not in targets
    assert mine["security_group"] not in groups
    for other in ("envctl-someone-else", "untagged"):
        assert made[other]["load_balancer"] in balancers
        assert made[other]["target_group"] in targets
        assert made[other]["security_group"] in groups
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/eks/envctl-pr36/")["logGroups"] == []
    assert hooked.phase("pr36") == "Destroyed"


class DependencyProxy:
    """An HTTP proxy to moto that answers EC2 DeleteSecurityGroup with DependencyViolation (as EC2
    does while a deleted load balancer's network interfaces still hold the group), `times` times."""

    def __init__(self, upstream: str, times: int) -> None:
        self.upstream = upstream
        self.left = times
        self.refused = 0
        self.local = LocalServer(self.handle)
        self.url = self.local.url

    def handle(self, request: Handler) -> None:
        import http.client

        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        if b"Action=DeleteSecurityGroup" in body and self.left > 0:
            self.left -= 1
            self.refused += 1
            refusal = (
                b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
                b"<Code>DependencyViolation</Code><Message>resource has a dependent object</Message>"
                b"</Error></Errors><RequestID>envctl-test</RequestID></Response>"
            )
            return answer(request, 400, refusal, content_type="text/xml")
        host, port = self.upstream.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request(request.command, request.path, body=body, headers=dict(request.headers))
        response = connection.getresponse()
        passed = ("content-type", "x-amzn-requestid", "x-amz-request-id")
        headers = {key: value for key, value in response.getheaders() if key.lower() in passed}
        return answer(
            request,
            response.status,
            response.read(),
            headers,
            content_type=response.getheader("Content-Type", "text/xml"),
        )

    def close(self) -> None:
        self.local.close()


def test_security_groups_still_in_use_are_retried_until_released(aws: Aws):
    """DependencyViolation while the group is held: retried each poll until it is released."""
    region = "us-west-2"
    made = make_leftovers(aws, region, "envctl-pr37")
    proxy = DependencyProxy(aws.endpoint, times=2)
    sleeps: list[float] = []
    try:
        hooks = StackHooks(endpoint=proxy.url, poll_seconds=5, sleep=sleeps.append)
        deleted = hooks.before_destroy(Hooks(region=region, elbv2_cluster_tag="envctl-pr37"))
    finally:
        proxy.close()
    assert deleted == {"load_balancers": 1, "target_groups": 1, "security_groups": 1}
    assert proxy.refused == 2
    assert sleeps == [5, 5]
    groups = {g["GroupId"] for g in client(aws, "ec2", region).describe_security_groups()["SecurityGroups"]}
    assert made["envctl-pr37"]["security_group"] not in groups
    assert made["envctl-someone-else"]["security_group"] in groups


def test_clean_up_that_never_finishes_is_transient(aws: Aws):
    """A group held past the timeout is a TransientError: the destroy is retried later (Terraform
    never runs against a VPC that cannot be deleted), never reported done."""
    region = "sa-east-1"
    make_leftovers(aws, region, "envctl-pr38")
    proxy = DependencyProxy(aws.endpoint, times=1000)
    ticks = iter(range(1000))
    try:
        hooks = StackHooks(
            endpoint=proxy.url,
            cleanup_timeout_seconds=3,
            poll_seconds=1,
            sleep=lambda _: None,
            clock=lambda: float(next(ticks)),
        )
        with pytest.raises(
            TransientError, match="timed out after 3 s waiting for security groups of envctl-pr38"
        ):
            hooks.before_destroy(Hooks(region=region, elbv2_cluster_tag="envctl-pr38"))
    finally:
        proxy.close()
