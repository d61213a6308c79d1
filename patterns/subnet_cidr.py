"""Pattern 1, subnet-cidr: each tenant runs on its own tainted node group in its
own subnets in every AZ; the firewall allow-lists the tenant's subnet CIDRs.

The VPC CNI SNATs pod traffic leaving the VPC to the node's primary IP, which
lies in the tenant's subnet, and pod IPs come from the same subnets, so every
packet a tenant sends carries an address from its own CIDRs.
"""

from __future__ import annotations

import pulumi

from .addressing import AddressPlan
from .cluster import Cluster, Cni, VpcCni
from .network import Network
from .plan import PatternSpec, Plan
from .settings import Settings, Tenant
from .tenancy import DEDICATED_NODES, DedicatedTenant, TenantNamespaces, path_taints


class SubnetCidr(pulumi.ComponentResource):
    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 namespaces: TenantNamespaces, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:SubnetCidr", name, None, opts)
        self.tenants = {
            tenant.name: DedicatedTenant(
                tenant.name,
                tenant,
                plan.addresses.tenants[tenant.name],
                network=network,
                cluster=cluster,
                cni=cni,
                route_tables=network.private_route_tables,
                extra_taints=path_taints(plan, tenant),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tenant in plan.settings.tenants
        }
        self.register_outputs({"tenants": list(self.tenants)})


def _tenant_subnet_cidrs(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    return [str(s.cidr) for s in addresses.tenants[tenant.name].subnets]


SPEC = PatternSpec(
    name="subnet-cidr",
    summary="tenant subnets + a tainted node group per tenant; source = the tenant's subnet CIDRs",
    component=SubnetCidr,
    cni=lambda name, plan, cluster, opts: VpcCni(name, cluster, opts=opts),
    tenant_range=lambda settings: settings.vpc_cidr,
    sources=_tenant_subnet_cidrs,
    admission=DEDICATED_NODES,
    node_group_count=lambda settings: 1 + len(settings.tenants),
    multi_az_node_groups=lambda settings: [f"tenant {t.name}" for t in settings.tenants],
)
