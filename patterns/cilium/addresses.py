"""The pure egress-IP plan of the cilium pattern: which address each tenant
leaves from in every AZ, and the config checks and warnings about it. No
Pulumi objects: the firewall team gets these addresses before deploy."""

from __future__ import annotations

import ipaddress

from ..addressing import AWS_RESERVED_HEAD, AddressPlan, Subnet, usable_host
from ..settings import NAMESPACE, Problem, Settings, Tenant

# IPv4 addresses per ENI (EC2 user guide, "IP addresses per network interface
# per instance type"); the egress ENI holds its own primary IP plus one per tenant.
IPV4_PER_ENI = {
    "c6in.large": 10, "c6in.xlarge": 15, "c6in.2xlarge": 15, "c6in.4xlarge": 30, "c6in.8xlarge": 30,
    "c7i.large": 10, "c7i.xlarge": 15, "c7i.2xlarge": 15, "c7i.4xlarge": 30,
    "m7i.large": 10, "m7i.xlarge": 15, "m7i.2xlarge": 15, "m7i.4xlarge": 30,
    "c5n.large": 10, "c5n.xlarge": 15, "c5n.2xlarge": 15, "c5n.4xlarge": 30,
}


def egress_ip_block(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The first half of an egress subnet, reserved for pinned egress IPs (the
    other half serves the gateway nodes' own addresses)."""
    return next(subnet.subnets(prefixlen_diff=1))


def eni_primary_ip(subnet: Subnet) -> ipaddress.IPv4Address:
    """The egress ENI's own address: never a tenant's, so tenants come and go
    without replacing the ENI."""
    return usable_host(subnet.cidr, 0)


def egress_ip(settings: Settings, subnet: Subnet, tenant: Tenant) -> ipaddress.IPv4Address:
    return usable_host(subnet.cidr, 1 + settings.slots[tenant.name])


def egress_ips(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> dict[str, ipaddress.IPv4Address]:
    """The tenant's egress IP in every AZ."""
    return {s.az: egress_ip(settings, s, tenant) for s in addresses.egress_subnets}


def sources(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    return [f"{ip}/32" for ip in egress_ips(settings, addresses, tenant).values()]


def checks(settings: Settings) -> list[Problem]:
    problems = []
    block = egress_ip_block(ipaddress.IPv4Network(f"0.0.0.0/{settings.egress_subnet_prefix}"))
    # The block starts with AWS's reserved addresses and ends before the
    # subnet's broadcast address; its first usable address is the ENI's own.
    room = block.num_addresses - AWS_RESERVED_HEAD - 1
    for position, tenant in enumerate(settings.tenants):
        slot = settings.slots[tenant.name]
        if slot >= room:
            problems.append(
                Problem(
                    f"{NAMESPACE}:tenants[{position}]" + (".slot" if tenant.slot is not None else ""),
                    f"tenant {tenant.name!r} (slot {slot}) gets no egress IP: the reserved half of each "
                    f"/{settings.egress_subnet_prefix} egress subnet holds {room} tenant IPs; use a shorter "
                    "egress:egressSubnetPrefix or a lower slot",
                )
            )
    limit = IPV4_PER_ENI.get(settings.gateway_instance_type)
    needed = 1 + len(settings.tenants)
    if limit is not None and needed > limit:
        problems.append(
            Problem(
                f"{NAMESPACE}:gatewayInstanceType",
                f"{settings.gateway_instance_type} holds {limit} IPv4 addresses per ENI but the egress ENI "
                f"needs {needed} (its own + one per tenant); pick a type with more, e.g. c6in.4xlarge",
            )
        )
    return problems


def warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    found = [
        "open-source Cilium has no failover of an egress IP (cilium/cilium#18230): while a gateway "
        "node is down, the pods Cilium assigned to that gateway lose egress to their upstreams "
        "(traffic is dropped, never sent from another IP). This stack runs one gateway per AZ, so a "
        "failure cuts only the pods assigned to that AZ's gateway; EKS replaces the node, which "
        "re-attaches the same ENI and IPs, and Cilium moves those pods to the other gateways once "
        "the failed Node object is deleted. After a gateway node is replaced, re-apply the tenant "
        "policies (Cilium does not re-read a node's addresses); see docs/cilium.md",
    ]
    if settings.gateway_instance_type not in IPV4_PER_ENI:
        found.append(
            f"egress:gatewayInstanceType {settings.gateway_instance_type} is not in the known list; "
            f"make sure it holds at least {1 + len(settings.tenants)} IPv4 addresses per ENI"
        )
    return found
