"""The pure egress-IP plan of the cilium pattern: which address each tenant
leaves from in every AZ, and the config checks and warnings about it. No
Pulumi objects: the firewall team gets these addresses before deploy."""

from __future__ import annotations

import ipaddress

from ..addressing import AddressPlan, Subnet, pinned_room, usable_host
from ..instance_types import ipv4_per_eni
from ..settings import NAMESPACE, Problem, Settings, Tenant


def eni_primary_ip(subnet: Subnet) -> ipaddress.IPv4Address:
    """The egress ENI's own address: never a tenant's, so tenants come and go
    without replacing the ENI."""
    return usable_host(subnet.cidr, 0)


def slot_ip(subnet: Subnet, slot: int) -> ipaddress.IPv4Address:
    """The egress IP of a tenant slot: the addresses after the ENI's own."""
    return usable_host(subnet.cidr, 1 + slot)


def egress_ip(settings: Settings, subnet: Subnet, tenant: Tenant) -> ipaddress.IPv4Address:
    return slot_ip(subnet, settings.slots[tenant.name])


def egress_ips(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> dict[str, ipaddress.IPv4Address]:
    """The tenant's egress IP in every AZ."""
    return {s.az: egress_ip(settings, s, tenant) for s in addresses.egress_subnets}


def sources(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    return [f"{ip}/32" for ip in egress_ips(settings, addresses, tenant).values()]


def reserved_room(settings: Settings) -> int:
    """Tenant IPs the reserved half of an egress subnet holds: its first
    usable address is the ENI's own."""
    return pinned_room(settings.egress_subnet_prefix) - 1


def eni_capacity(settings: Settings) -> int:
    """Tenant slots every egress ENI holds from its creation on.

    The ENI gets an egress IP for every slot it can hold (the instance type's
    IPv4 addresses per ENI, less its own), not only for today's tenants: a new
    tenant then only adds a policy. Changing the ENI's private_ip_list later
    would make the provider unassign every secondary IP and assign the list
    again (terraform-provider-aws, internal/service/ec2/vpc_network_interface.go,
    resourceNetworkInterfaceUpdate, "private_ip_list"): every tenant's egress
    would drop. For an instance type of unknown limits (patterns/instance_types.py) the ENI holds the
    tenants' slots only."""
    limit = ipv4_per_eni(settings.gateway_instance_type)
    if limit is None:
        return max(_held_slots(settings), default=-1) + 1
    return min(limit - 1, reserved_room(settings))


def _held_slots(settings: Settings) -> set[int]:
    """Slots of today's tenants and of removed ones still reserved (the
    firewall may still trust their addresses)."""
    return set(settings.assignment.tenants.values())


def eni_ips(settings: Settings, subnet: Subnet) -> list[ipaddress.IPv4Address]:
    """The ENI's private IPs in slot order: its own first (the primary, which
    never changes), then slot 0, 1, ... whether or not a tenant holds it yet."""
    return [eni_primary_ip(subnet), *(slot_ip(subnet, slot) for slot in range(eni_capacity(settings)))]


def checks(settings: Settings) -> list[Problem]:
    problems = []
    room = reserved_room(settings)
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
    limit = ipv4_per_eni(settings.gateway_instance_type)
    needed = 2 + max((settings.slots[t.name] for t in settings.tenants), default=-1)
    if limit is not None and needed > limit:
        problems.append(
            Problem(
                f"{NAMESPACE}:gatewayInstanceType",
                f"{settings.gateway_instance_type} holds {limit} IPv4 addresses per ENI but the egress ENI "
                f"needs {needed} (its own + one per slot up to the highest tenant slot); pick a type with "
                "more, e.g. c6in.4xlarge",
            )
        )
    return problems


def warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    azs = len(addresses.egress_subnets)
    found = [
        "one gateway per AZ, AZ-local: each tenant's pods leave through the gateway of their own node's AZ "
        "(one policy per tenant and AZ), and open-source Cilium does not fail an egress IP over "
        "(cilium/cilium#18230). When a gateway goes, the tenants' pods on that AZ's nodes lose egress to "
        "their upstreams (dropped, never sent from another IP) until the replacement has attached the AZ's "
        "ENI and labelled itself egress/eni-ready=true: about a minute in a node group upgrade (the new "
        "node takes the ENI when the old one terminates), a few minutes when EC2 replaces a failed "
        "instance, up to 30 minutes plus a boot for a hung node (EKS node auto-repair; terminate it by "
        f"hand to go faster). Pods in the other {azs - 1} AZ(s) keep their egress; spread each tenant's "
        "replicas across AZs. See docs/cilium.md",
    ]
    capacity = eni_capacity(settings)
    taken = _held_slots(settings)
    limit = ipv4_per_eni(settings.gateway_instance_type)
    if limit is None:
        found.append(
            f"egress:gatewayInstanceType {settings.gateway_instance_type} is not in the known list, so the "
            "egress ENIs hold only today's tenant slots: adding a tenant on a new slot re-assigns every "
            "egress IP (a few seconds without egress for every tenant); make sure the type holds at least "
            f"{1 + capacity} IPv4 addresses per ENI"
        )
    else:
        free = sorted(set(range(capacity)) - taken)
        found.append(
            f"the egress ENIs hold {capacity} tenant IPs ({settings.gateway_instance_type}: {limit} IPv4 "
            f"addresses per ENI, one is the ENI's own); {len(free)} more tenant(s) fit"
            + (f" (slots {free[0]}-{free[-1]})" if free else "")
            + " without touching the ENIs. Beyond that the gateway instance type must grow, which replaces "
            "the gateway nodes and re-assigns every egress IP (a few seconds without egress for every tenant)"
        )
    return found
