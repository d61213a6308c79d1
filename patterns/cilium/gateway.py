"""The cilium pattern's egress path: per AZ an egress ENI holding the tenants'
pinned IPs and a one-node gateway group that attaches it; per tenant its
CiliumEgressGatewayPolicy."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from ..cluster import Cluster, Cni, NodeRole
from ..network import Network
from ..plan import Plan
from ..settings import Settings
from ..tenancy import TENANT_KEY, TenantNamespaces, gateway_taint
from .addresses import egress_ips, eni_ips
from .iam import GATEWAY_ENI_TAG, gateway_node_policy
from .install import NO_MANAGE_TAG
from .node_script import gateway_user_data
from .policies import GATEWAY_LABEL, POLICY_API_VERSION, POLICY_KIND, ZONE_LABEL, policy_name, policy_spec

GATEWAY_TAINT = gateway_taint("cilium")


@dataclass(frozen=True)
class GatewaySize:
    """One node per AZ: an egress IP can live on one instance at a time."""

    instance_type: str
    min: int = 1
    max: int = 1


class CiliumEgress(pulumi.ComponentResource):
    """Gateway subnets, ENIs and nodes per AZ; per tenant a namespace and its
    CiliumEgressGatewayPolicy."""

    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 namespaces: TenantNamespaces, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:CiliumEgress", name, None, opts)
        settings = plan.settings
        stack = plan.stack
        child = pulumi.ResourceOptions(parent=self)
        tags = {"egress/stack": stack}

        self.eni_security_group = aws.ec2.SecurityGroup(
            f"{name}-gateway-eni",
            vpc_id=network.vpc_id,
            description="Egress ENIs: tenants' upstreams only (stateful: replies return)",
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp", from_port=port, to_port=port, cidr_blocks=[cidr],
                    description=f"{tenant}/{upstream}",
                )
                for (cidr, port), (tenant, upstream) in _egress_rules(settings).items()
            ],
            tags=tags,
            opts=child,
        )
        # Only gateway nodes may attach the egress ENIs: they get their own role.
        gateway_role = cluster.new_node_role(f"{name}-gateway", parent=self)
        self.node_attach_policy = aws.iam.RolePolicy(
            f"{name}-gateway-eni-attach",
            role=gateway_role.role.name,
            policy=json.dumps(gateway_node_policy(stack, settings.region)),
            opts=pulumi.ResourceOptions(parent=gateway_role.role),
        )
        self.gateway_role = NodeRole(gateway_role.role, [*gateway_role.policies, self.node_attach_policy])

        self.subnets: dict[str, aws.ec2.Subnet] = {}
        self.enis: dict[str, aws.ec2.NetworkInterface] = {}
        self.node_groups: dict[str, aws.eks.NodeGroup] = {}
        previous: list[pulumi.Resource] = []
        for subnet in plan.addresses.egress_subnets:
            az = subnet.az
            resource = network.gateway_subnets[az]
            # The base reserves the pinned half explicitly (Network.pinned_reservations):
            # nodes and pods cannot take a tenant's future egress IP.
            reservation = network.pinned_reservations[az]
            eni = aws.ec2.NetworkInterface(
                f"{name}-gateway-{az}",
                subnet_id=resource.id,
                # Ordered: the ENI's own address (primary) first, then one per
                # slot in slot order, every slot it can hold, so adding or
                # reordering tenants never changes the list (see eni_capacity).
                private_ip_list_enabled=True,
                private_ip_lists=[str(ip) for ip in eni_ips(settings, subnet)],
                security_groups=[self.eni_security_group.id],
                description=f"Egress IPs of the tenants in {az} ({stack})",
                tags={**tags, "Name": f"{name}-gateway-{az}", GATEWAY_ENI_TAG: stack, NO_MANAGE_TAG[0]: NO_MANAGE_TAG[1]},
                # Pinned IPs inside an explicit reservation: the reservation first.
                opts=pulumi.ResourceOptions(parent=resource, depends_on=[reservation]),
            )
            template = cluster.hardened_launch_template(
                f"{name}-gateway-{az}",
                user_data=pulumi.Output.all(eni.id, cluster.name).apply(
                    lambda args, cidr=subnet.cidr: base64.b64encode(
                        gateway_user_data(args[0], cidr, args[1]).encode()
                    ).decode()
                ),
                parent=self,
            )
            self.subnets[az] = resource
            self.enis[az] = eni
            self.node_groups[az] = cluster.node_group(
                f"{name}-gateway-{az}",
                subnet_ids=[resource.id],
                size=GatewaySize(settings.gateway_instance_type),
                labels=GATEWAY_LABEL,
                taints=[GATEWAY_TAINT],
                cni=cni,
                parent=self,
                launch_template=template,
                role=self.gateway_role,
                # A hung gateway is replaced without a person (EKS: NotReady for 30 min).
                auto_repair=True,
                # One AZ at a time: an upgrade (or any replacement) of the gateway
                # groups never takes two AZs' egress down together.
                after=previous,
            )
            previous = [self.node_groups[az]]

        self.policies = {}
        for tenant in settings.tenants:
            for az, ip in egress_ips(settings, plan.addresses, tenant).items():
                self.policies[(tenant.name, az)] = k8s.apiextensions.CustomResource(
                    f"{name}-{tenant.name}-{az}",
                    api_version=POLICY_API_VERSION,
                    kind=POLICY_KIND,
                    metadata={"name": policy_name(tenant, az), "labels": {TENANT_KEY: tenant.name, ZONE_LABEL: az}},
                    spec=policy_spec(tenant, az, ip),
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        # The CRD is registered by the Cilium operator at start-up,
                        # which runs once nodes are Ready. Gateways are picked by
                        # their ready label, so a policy never needs re-applying
                        # when a gateway or its ENI changes.
                        depends_on=list(self.node_groups.values()),
                    ),
                )
        self.register_outputs(
            {"policies": [p.metadata["name"] for p in self.policies.values()],
             "enis": [e.id for e in self.enis.values()]}
        )


def _egress_rules(settings: Settings) -> dict[tuple[str, int], tuple[str, str]]:
    rules: dict[tuple[str, int], tuple[str, str]] = {}
    for tenant in settings.tenants:
        for upstream in tenant.upstreams:
            for port in upstream.ports:
                rules.setdefault((str(upstream.cidr), port), (tenant.name, upstream.name))
    return rules
