"""The VPC every pattern shares: private cluster subnets in every AZ, one private
route table per AZ, a private path to AWS APIs, optional internet egress and an
optional transit gateway attachment that carries the on-prem ranges."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from .addressing import Subnet, pinned_block
from .plan import Plan
from .settings import OnPremDns

# Interface endpoints that let private nodes bootstrap, pull from ECR and reach
# the AWS APIs the add-ons call, without a public IP (EKS user guide,
# "Deploy private clusters with limited internet access"; it lists
# autoscaling for the Cluster Autoscaler, which also calls ec2, eks and sts).
INTERFACE_ENDPOINTS = (
    "ec2", "ecr.api", "ecr.dkr", "sts", "logs", "eks", "eks-auth", "elasticloadbalancing", "autoscaling",
)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    cluster_subnet_ids: list[pulumi.Output[str]]  # every AZ: endpoints, transit gateway attachment
    control_plane_subnet_ids: list[pulumi.Output[str]]  # the AZs the cluster was created with
    private_route_tables: dict[str, aws.ec2.RouteTable]  # by AZ
    transit_gateway_attachment: aws.ec2transitgateway.VpcAttachment | None
    endpoint_security_group: aws.ec2.SecurityGroup
    secondary_cidr: aws.ec2.VpcIpv4CidrBlockAssociation | None  # the tenant range, when outside vpcCidr
    cidr_blocks: list[str]  # every range of the VPC
    s3_endpoint: aws.ec2.VpcEndpoint

    def __init__(self, name: str, plan: Plan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:base:Network", name, None, opts)
        settings = plan.settings
        child = pulumi.ResourceOptions(parent=self)
        tags = {"egress/stack": plan.stack}
        self.internet_egress = settings.internet_egress
        self.tags = tags

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(settings.vpc_cidr),
            enable_dns_support=True,
            enable_dns_hostnames=True,  # required for private endpoint DNS and the EKS private API
            tags={**tags, "Name": f"{name}-{plan.stack}"},
            opts=child,
        )
        self.vpc_id = self.vpc.id
        vpc_child = pulumi.ResourceOptions(parent=self.vpc)

        self.cluster_subnets = {
            s.az: self.subnet(f"{name}-cluster", s, {"kubernetes.io/role/internal-elb": "1"})
            for s in plan.addresses.cluster_subnets
        }
        self.cluster_subnet_ids = [s.id for s in self.cluster_subnets.values()]
        # EKS adds no subnet in an AZ the cluster was not created with
        # (aws/containers-roadmap#2330): the control plane keeps its AZs, and an
        # appended AZ gets node, gateway and endpoint capacity only.
        self.control_plane_subnet_ids = [
            self.cluster_subnets[az].id for az in settings.assignment.control_plane_azs
        ]

        # A tenant range outside the primary one (a non-routable range reused
        # across VPCs) is a secondary VPC CIDR; its subnets must wait for it.
        self.secondary_cidr = None
        self.cidr_blocks = [str(settings.vpc_cidr)]
        tenant_range = plan.addresses.tenant_range
        if tenant_range is not None and not tenant_range.subnet_of(settings.vpc_cidr):
            self.secondary_cidr = aws.ec2.VpcIpv4CidrBlockAssociation(
                f"{name}-tenant-range", vpc_id=self.vpc.id, cidr_block=str(tenant_range), opts=vpc_child
            )
            self.cidr_blocks.append(str(tenant_range))

        self.transit_gateway_attachment = None
        if settings.transit_gateway_id:
            self.transit_gateway_attachment = self._transit_gateway(name, settings, tags)

        self._internet_nat_gateways = (
            self._internet_nat(name, plan, tags) if settings.internet_egress == "nat" else {}
        )

        # AWS APIs stay on the AWS network: S3 (ECR image layers) through a
        # gateway endpoint, associated with every private route table (see
        # private_route_table), the rest through interface endpoints.
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{settings.region}.s3",
            vpc_endpoint_type="Gateway",
            tags=tags,
            opts=vpc_child,
        )

        self.private_route_tables = {}
        for subnet in plan.addresses.cluster_subnets:
            table = self.private_route_table(f"{name}-private-{subnet.az}", subnet.az)
            self.private_route_tables[subnet.az] = table
            aws.ec2.RouteTableAssociation(
                f"{name}-cluster-{subnet.az}",
                subnet_id=self.cluster_subnets[subnet.az].id,
                route_table_id=table.id,
                opts=pulumi.ResourceOptions(parent=table),
            )
            if self.transit_gateway_attachment:
                for index, onprem in enumerate(settings.on_prem_cidrs):
                    self.route_to_transit_gateway(table, f"{name}-private-{subnet.az}-onprem-{index}", str(onprem))

        # Gateway subnets (the egress block): the NAT gateways of private-nat or
        # the gateway nodes of cilium and istio. They belong to the base so that a
        # change of pattern reuses them instead of creating a second subnet on
        # the same range (which AWS refuses) before deleting the first.
        self.gateway_subnets = {
            s.az: self.routed_subnet(f"{name}-gateway", s, {"egress/role": "gateway"}, parent=self.vpc)
            for s in plan.addresses.egress_subnets
        }
        # The pinned half of every gateway subnet is an explicit reservation under
        # every pattern: AWS assigns none of its addresses on its own (only what
        # a resource names), so no gateway node or pod ever holds an address a
        # pattern pins, and a change of pattern cannot find its NAT or egress IPs
        # taken. Reserving in-use addresses is allowed and unassigns nothing;
        # reservations in one VPC must not overlap
        # (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-cidr-reservation.html).
        # Name, parent and inputs are those cilium's reservation always had, so
        # cilium stacks keep theirs as is.
        self.pinned_reservations = {
            s.az: aws.ec2.SubnetCidrReservation(
                f"{name}-gateway-{s.az}-egress-ips",
                subnet_id=self.gateway_subnets[s.az].id,
                cidr_block=str(pinned_block(s.cidr)),
                reservation_type="explicit",
                description="Pinned egress IPs of the tenants",
                opts=pulumi.ResourceOptions(parent=self.gateway_subnets[s.az]),
            )
            for s in plan.addresses.egress_subnets
        }

        self.endpoint_security_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=self.vpc.id,
            description="HTTPS from the VPC to the AWS API interface endpoints",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=443, to_port=443, cidr_blocks=self.cidr_blocks,
                    description="HTTPS from the VPC",
                )
            ],
            tags=tags,
            opts=vpc_child,
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{settings.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.cluster_subnet_ids,
                security_group_ids=[self.endpoint_security_group.id],
                tags=tags,
                opts=vpc_child,
            )

        self.resolver_endpoint = None
        if settings.on_prem_dns is not None:
            self.resolver_endpoint = self._forward_on_prem_dns(name, settings.on_prem_dns, tags)

        self.register_outputs({
            "vpc_id": self.vpc_id, "cluster_subnet_ids": self.cluster_subnet_ids,
            "control_plane_subnet_ids": self.control_plane_subnet_ids,
        })

    def subnet(self, prefix: str, subnet: Subnet, tags: dict[str, str] | None = None, *,
               parent: pulumi.Resource | None = None, depends_on: list[pulumi.Resource] | None = None) -> aws.ec2.Subnet:
        """A private subnet of this VPC (no public IPs on launch)."""
        return aws.ec2.Subnet(
            f"{prefix}-{subnet.az}",
            vpc_id=self.vpc.id,
            cidr_block=str(subnet.cidr),
            availability_zone=subnet.az,
            map_public_ip_on_launch=False,
            tags={"Name": f"{prefix}-{subnet.az}", **(tags or {})},
            opts=pulumi.ResourceOptions(parent=parent or self.vpc, depends_on=depends_on),
        )

    def private_route_table(self, name: str, az: str, *, parent: pulumi.Resource | None = None,
                            internet: bool = True) -> aws.ec2.RouteTable:
        """A private route table with what every private subnet in `az` needs: the
        S3 gateway endpoint and, if `internet`, the default route that
        egress:internetEgress gives (the same-AZ public NAT, or the transit
        gateway). On-prem routes are the caller's."""
        table = aws.ec2.RouteTable(
            name, vpc_id=self.vpc.id, tags={**self.tags, "Name": name},
            opts=pulumi.ResourceOptions(parent=parent or self.vpc),
        )
        in_table = pulumi.ResourceOptions(parent=table)
        # Standalone associations (not the endpoint's route_table_ids), so tables
        # that patterns add later do not fight the endpoint over its list.
        aws.ec2.VpcEndpointRouteTableAssociation(
            f"{name}-s3", vpc_endpoint_id=self.s3_endpoint.id, route_table_id=table.id, opts=in_table
        )
        if internet and self.internet_egress == "nat":
            aws.ec2.Route(
                f"{name}-internet",
                route_table_id=table.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=self._internet_nat_gateways[az].id,
                opts=in_table,
            )
        elif internet and self.internet_egress == "transit-gateway":
            self.route_to_transit_gateway(table, f"{name}-internet", "0.0.0.0/0")
        return table

    def routed_subnet(self, prefix: str, subnet: Subnet, tags: dict[str, str] | None = None, *,
                      parent: pulumi.Resource, route_table: aws.ec2.RouteTable | None = None,
                      depends_on: list[pulumi.Resource] | None = None) -> aws.ec2.Subnet:
        """A private subnet associated with a route table: by default its AZ's
        private table (on-prem via the transit gateway, internet as configured)."""
        resource = self.subnet(prefix, subnet, tags, parent=parent, depends_on=depends_on)
        aws.ec2.RouteTableAssociation(
            f"{prefix}-{subnet.az}",
            subnet_id=resource.id,
            route_table_id=(route_table or self.private_route_tables[subnet.az]).id,
            opts=pulumi.ResourceOptions(parent=resource),
        )
        return resource

    def route_to_transit_gateway(self, table: aws.ec2.RouteTable, name: str, cidr: str) -> aws.ec2.Route:
        assert self.transit_gateway_attachment is not None
        return aws.ec2.Route(
            name,
            route_table_id=table.id,
            destination_cidr_block=cidr,
            transit_gateway_id=self.transit_gateway_attachment.transit_gateway_id,
            # The route is only valid once the attachment exists.
            opts=pulumi.ResourceOptions(parent=table, depends_on=[self.transit_gateway_attachment]),
        )

    def _transit_gateway(self, name: str, settings, tags: dict[str, str]) -> aws.ec2transitgateway.VpcAttachment:
        """The attachment, and on the transit gateway only what on-prem must reach:
        the VPC's primary range (tenant subnets, NAT and egress IPs, gateway
        subnets, the API endpoint). Never a secondary tenant range: private-nat's
        tenantCidr may repeat across VPCs and overlap on-prem.

        Propagation advertises every range of the VPC
        (https://docs.aws.amazon.com/vpc/latest/tgw/tgw-route-tables.html), so it
        is on only while the primary range is the VPC's only one and no route
        table is named; with egress:transitGatewayRouteTableId the stack adds a
        static route for the primary range instead. The provider applies both
        default-table settings only when the transit gateway belongs to this
        account (terraform-provider-aws transitgateway_vpc_attachment.go: route
        tables of a RAM-shared transit gateway cannot be modified); otherwise its
        owner decides association and propagation (README, 'Transit gateway')."""
        propagate = self.secondary_cidr is None and not settings.transit_gateway_route_table_id
        attachment = aws.ec2transitgateway.VpcAttachment(
            f"{name}-tgw",
            transit_gateway_id=settings.transit_gateway_id,
            vpc_id=self.vpc.id,
            subnet_ids=self.cluster_subnet_ids,
            dns_support="enable",
            transit_gateway_default_route_table_propagation=propagate,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self.vpc),
        )
        if settings.transit_gateway_route_table_id:
            aws.ec2transitgateway.Route(
                f"{name}-tgw-vpc",
                transit_gateway_route_table_id=settings.transit_gateway_route_table_id,
                destination_cidr_block=str(settings.vpc_cidr),
                transit_gateway_attachment_id=attachment.id,
                opts=pulumi.ResourceOptions(parent=attachment),
            )
        # A transit gateway of another account that does not auto-accept leaves
        # the attachment pendingAcceptance, and creation still succeeds
        # (terraform-provider-aws waitTransitGatewayVPCAttachmentCreated targets
        # available or pendingAcceptance): the routes below exist but carry
        # nothing until its owner accepts. Said at preview and at every update.
        owner = aws.ec2transitgateway.get_transit_gateway_output(
            id=settings.transit_gateway_id, opts=pulumi.InvokeOptions(parent=self)
        )
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        pulumi.Output.all(owner.owner_id, owner.auto_accept_shared_attachments, account).apply(
            lambda values: self._say_if_pending(settings, *values)
        )
        return attachment

    def _say_if_pending(self, settings, owner_id: str, auto_accept: str, account_id: str) -> None:
        message = pending_acceptance(settings, owner_id, auto_accept, account_id)
        if message:
            pulumi.log.warn(message, resource=self.transit_gateway_attachment)

    def _forward_on_prem_dns(self, name: str, dns: OnPremDns, tags: dict[str, str]) -> aws.route53.ResolverEndpoint:
        """A Route 53 Resolver outbound endpoint in the cluster subnets and one
        forwarding rule per on-prem domain, associated with this VPC: the VPC
        resolver (and so CoreDNS, nodes and gateways) answers on-prem names by
        asking the on-prem resolvers, through the transit gateway."""
        vpc_child = pulumi.ResourceOptions(parent=self.vpc)
        resolvers = [f"{ip}/32" for ip in dns.resolver_ips]
        # Route 53 Developer Guide, "Security group settings for Resolver
        # endpoints": an outbound endpoint needs outbound DNS (TCP and UDP 53) to
        # the resolvers, nothing inbound. An inline egress list replaces the
        # default allow-all egress rule.
        group = aws.ec2.SecurityGroup(
            f"{name}-onprem-dns",
            vpc_id=self.vpc.id,
            description="Route 53 Resolver outbound endpoint: DNS to the on-prem resolvers only",
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol=protocol, from_port=53, to_port=53, cidr_blocks=resolvers,
                    description=f"DNS over {protocol.upper()} to the on-prem resolvers",
                )
                for protocol in ("udp", "tcp")
            ],
            tags={**tags, "Name": f"{name}-onprem-dns"},
            opts=vpc_child,
        )
        # An endpoint needs at least two IP addresses, in two AZs (Route 53
        # Developer Guide, "Values that you specify when you create or edit
        # outbound endpoints"): one per cluster subnet, and there are 2-4 AZs.
        endpoint = aws.route53.ResolverEndpoint(
            f"{name}-onprem-dns",
            direction="OUTBOUND",
            security_group_ids=[group.id],
            ip_addresses=[
                aws.route53.ResolverEndpointIpAddressArgs(subnet_id=subnet.id)
                for subnet in self.cluster_subnets.values()
            ],
            protocols=["Do53"],
            tags=tags,
            opts=vpc_child,
        )
        in_endpoint = pulumi.ResourceOptions(parent=endpoint)
        for domain in dns.domains:
            # Named after the domain: a rule's domain cannot change in place.
            key = f"{name}-dns-{domain.replace('.', '-')}"
            rule = aws.route53.ResolverRule(
                key,
                domain_name=domain,
                rule_type="FORWARD",
                resolver_endpoint_id=endpoint.id,
                target_ips=[aws.route53.ResolverRuleTargetIpArgs(ip=str(ip), port=53) for ip in dns.resolver_ips],
                tags=tags,
                opts=in_endpoint,
            )
            aws.route53.ResolverRuleAssociation(
                key, resolver_rule_id=rule.id, vpc_id=self.vpc.id, opts=pulumi.ResourceOptions(parent=rule)
            )
        return endpoint

    def _internet_nat(self, name: str, plan: Plan, tags: dict[str, str]) -> dict[str, aws.ec2.NatGateway]:
        """One public NAT gateway per AZ, so an AZ outage cuts only that AZ's egress."""
        vpc_child = pulumi.ResourceOptions(parent=self.vpc)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=vpc_child)
        public_table = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=self.vpc.id, tags={**tags, "Name": f"{name}-public"}, opts=vpc_child
        )
        aws.ec2.Route(
            f"{name}-public-internet",
            route_table_id=public_table.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=pulumi.ResourceOptions(parent=public_table),
        )
        gateways = {}
        for subnet in plan.addresses.public_subnets:
            public = self.subnet(f"{name}-public", subnet)
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{subnet.az}",
                subnet_id=public.id,
                route_table_id=public_table.id,
                opts=pulumi.ResourceOptions(parent=public_table),
            )
            eip = aws.ec2.Eip(f"{name}-nat-{subnet.az}", domain="vpc", tags=tags, opts=vpc_child)
            gateways[subnet.az] = aws.ec2.NatGateway(
                f"{name}-nat-{subnet.az}",
                subnet_id=public.id,
                allocation_id=eip.id,
                connectivity_type="public",
                tags={**tags, "Name": f"{name}-nat-{subnet.az}"},
                # A public NAT gateway needs the internet gateway attached first.
                opts=pulumi.ResourceOptions(parent=public, depends_on=[igw]),
            )
        return gateways


def pending_acceptance(settings, owner_id: str, auto_accept: str, account_id: str) -> str | None:
    """What to say when the attachment will wait for its owner's acceptance."""
    if owner_id == account_id or auto_accept == "enable":
        return None
    return (
        f"transit gateway {settings.transit_gateway_id} belongs to account {owner_id} and does not "
        "auto-accept shared attachments: this VPC's attachment stays pendingAcceptance, and its on-prem routes "
        "(and the default route with internetEgress transit-gateway) carry nothing until the network team "
        f"accepts it in account {owner_id} (aws ec2 accept-transit-gateway-vpc-attachment), associates it and "
        f"routes {settings.vpc_cidr} to it, and only that range (never egress:privateNat.tenantCidr)"
    )
