"""The VPC the cluster lives in: three zones, public and private subnets, NAT egress."""

from __future__ import annotations

from cdktf import Fn, Postcondition, TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.data_aws_availability_zones import (
    DataAwsAvailabilityZones,
    DataAwsAvailabilityZonesFilter,
)
from cdktf_cdktf_provider_aws.eip import Eip
from cdktf_cdktf_provider_aws.internet_gateway import InternetGateway
from cdktf_cdktf_provider_aws.nat_gateway import NatGateway
from cdktf_cdktf_provider_aws.route_table import RouteTable, RouteTableRoute
from cdktf_cdktf_provider_aws.route_table_association import RouteTableAssociation
from cdktf_cdktf_provider_aws.subnet import Subnet
from cdktf_cdktf_provider_aws.vpc import Vpc
from constructs import Construct

from stack.config import EKS_UNSUPPORTED_ZONE_IDS, StackConfig

ZONES = 3


class Network(Construct):
    """VPC with DNS, a public and a private subnet per zone, IGW and NAT gateway(s)."""

    def __init__(self, scope: Construct, id_: str, *, config: StackConfig) -> None:
        super().__init__(scope, id_)
        names = config.names
        self.zones = self._zones(config)
        cluster_tag = f"kubernetes.io/cluster/{names.cluster}"
        self.vpc = Vpc(
            self,
            "vpc",
            cidr_block=config.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": names.vpc},
        )
        self.cidr_block = config.vpc_cidr
        igw = InternetGateway(self, "igw", vpc_id=self.vpc.id, tags={"Name": f"{names.cluster}-igw"})
        public_cidrs, private_cidrs = config.subnet_cidrs()

        # Public subnets carry the load balancers and the NAT gateways.
        public_table = RouteTable(
            self,
            "public_rt",
            vpc_id=self.vpc.id,
            route=[RouteTableRoute(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{names.cluster}-public"},
        )
        self.public_subnets: list[Subnet] = []
        for index, (zone, cidr) in enumerate(zip(self.zones, public_cidrs, strict=True)):
            subnet = Subnet(
                self,
                f"public_{index}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=True,
                tags={
                    "Name": names.subnet("public", index),
                    "kubernetes.io/role/elb": "1",
                    cluster_tag: "shared",
                },
            )
            RouteTableAssociation(
                self, f"public_rta_{index}", subnet_id=subnet.id, route_table_id=public_table.id
            )
            self.public_subnets.append(subnet)

        # One NAT gateway (cheap previews) or one per zone (no cross-zone dependency).
        nat_count = 1 if config.nat_gateways == "single" else 3
        self.nat_gateways: list[NatGateway] = []
        for index in range(nat_count):
            eip = Eip(self, f"nat_eip_{index}", domain="vpc", tags={"Name": f"{names.cluster}-nat-{index}"})
            self.nat_gateways.append(
                NatGateway(
                    self,
                    f"nat_{index}",
                    allocation_id=eip.id,
                    subnet_id=self.public_subnets[index].id,
                    tags={"Name": f"{names.cluster}-nat-{index}"},
                    depends_on=[igw],
                )
            )

        # Private subnets carry the control plane ENIs and every Fargate pod.
        self.private_subnets: list[Subnet] = []
        for index, (zone, cidr) in enumerate(zip(self.zones, private_cidrs, strict=True)):
            subnet = Subnet(
                self,
                f"private_{index}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={
                    "Name": names.subnet("private", index),
                    "kubernetes.io/role/internal-elb": "1",
                    cluster_tag: "shared",
                },
            )
            nat = self.nat_gateways[index % nat_count]
            table = RouteTable(
                self,
                f"private_rt_{index}",
                vpc_id=self.vpc.id,
                route=[RouteTableRoute(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{names.cluster}-private-{index}"},
            )
            RouteTableAssociation(self, f"private_rta_{index}", subnet_id=subnet.id, route_table_id=table.id)
            self.private_subnets.append(subnet)

    def _zones(self, config: StackConfig) -> list[str]:
        """The zones named in the parameters, else three the region offers and EKS supports.

        Zone letters map to different zone IDs in every account, so no letter is safe by
        itself: Terraform lists the available zones, minus the zone IDs EKS refuses.
        """
        if config.availability_zones is not None:
            return list(config.availability_zones)
        available = DataAwsAvailabilityZones(
            self,
            "zones",
            state="available",
            exclude_zone_ids=list(EKS_UNSUPPORTED_ZONE_IDS),
            # Local Zones and Wavelength Zones are opt-in: EKS control planes cannot use them.
            filter=[DataAwsAvailabilityZonesFilter(name="opt-in-status", values=["opt-in-not-required"])],
            lifecycle=TerraformResourceLifecycle(
                postcondition=[
                    Postcondition(
                        condition=f"${{length(self.names) >= {ZONES}}}",
                        error_message=(
                            f"{config.aws_region} offers fewer than {ZONES} zones EKS supports to this "
                            "account: name three in parameters.availability_zones"
                        ),
                    )
                ]
            ),
        )
        return [Fn.element(available.names, index) for index in range(ZONES)]
