"""The address plan: every range the patterns use, from settings alone.

Pure Python: no Pulumi objects, no AWS calls, so the firewall team gets the
allow-list before anything exists. Allocation is positional and aligned:

    VPC range:  [cluster block][public block][egress block][tenant slot 0][slot 1]...

Each block holds MAX_AZS subnets (one per AZ position), so adding an AZ or a
tenant never moves an existing range, and a tenant's ranges depend only on its
slot. Slots and AZ positions come from the persisted assignment
(patterns/assignment.py), so reordering, inserting or removing tenants or AZs
moves nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .settings import MAX_AZS, NAMESPACE, Problem, Settings

PUBLIC_SUBNET_PREFIX = 26  # holds the public NAT gateways only
AWS_RESERVED_HEAD = 4  # network, VPC router, DNS, future use
AWS_RESERVED_TAIL = 1  # broadcast


class AddressPlanError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


@dataclass(frozen=True)
class Subnet:
    az: str
    cidr: ipaddress.IPv4Network


@dataclass(frozen=True)
class TenantAddresses:
    name: str
    slot: int
    subnets: tuple[Subnet, ...]


@dataclass(frozen=True)
class AddressPlan:
    vpc_cidr: ipaddress.IPv4Network
    cluster_subnets: tuple[Subnet, ...]
    public_subnets: tuple[Subnet, ...]
    egress_subnets: tuple[Subnet, ...]
    tenant_range: ipaddress.IPv4Network | None  # where tenant subnets live, if any
    tenants: dict[str, TenantAddresses]

    def all_subnets(self) -> Iterable[Subnet]:
        yield from self.cluster_subnets
        yield from self.public_subnets
        yield from self.egress_subnets
        for tenant in self.tenants.values():
            yield from tenant.subnets


def usable_host(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """The index-th address AWS lets us assign in a subnet (skips reserved ones)."""
    usable = subnet.num_addresses - AWS_RESERVED_HEAD - AWS_RESERVED_TAIL
    if not 0 <= index < usable:
        raise IndexError(f"{subnet} has {usable} assignable addresses; asked for #{index}")
    return subnet.network_address + AWS_RESERVED_HEAD + index


def pinned_block(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The first half of a gateway subnet: where every pattern pins addresses
    (cilium's egress IPs, private-nat's NAT IPs). The base reserves it under
    every pattern, so gateway nodes (the other half) never take one, whichever
    pattern a stack runs or switches to."""
    return next(subnet.subnets(prefixlen_diff=1))


def usable_hosts(subnet: ipaddress.IPv4Network) -> int:
    return subnet.num_addresses - AWS_RESERVED_HEAD - AWS_RESERVED_TAIL


class _Cursor:
    """Hands out aligned, consecutive blocks of a parent range."""

    def __init__(self, parent: ipaddress.IPv4Network):
        self.parent = parent
        self.next = int(parent.network_address)

    def block(self, prefixlen: int) -> ipaddress.IPv4Network | None:
        size = 2 ** (32 - prefixlen)
        start = -(-self.next // size) * size  # align up
        self.next = start + size
        if self.next > int(self.parent.broadcast_address) + 1:
            return None
        return ipaddress.IPv4Network((start, prefixlen))


def _zonal(block: ipaddress.IPv4Network, prefixlen: int, azs: dict[str, int]) -> tuple[Subnet, ...]:
    """One subnet per AZ, at the AZ's position in the block (not its place in the list)."""
    parts = list(block.subnets(new_prefix=prefixlen))
    return tuple(Subnet(az, parts[position]) for az, position in azs.items())


def _block_prefix(prefixlen: int) -> int:
    return prefixlen - (MAX_AZS.bit_length() - 1)  # MAX_AZS subnets per block


def plan_addresses(
    settings: Settings, tenant_range: ipaddress.IPv4Network | None,
    tenant_range_key: str = f"{NAMESPACE}:vpcCidr",
) -> AddressPlan:
    """Allocate every range. `tenant_range` is None when the pattern gives tenants
    no subnets of their own, the VPC range to place them after the shared blocks,
    or another range (a secondary VPC CIDR) to place them from its start."""
    positions = settings.assignment.availability_zones
    azs = {az: positions[az] for az in settings.availability_zones}
    vpc = settings.vpc_cidr
    cursor = _Cursor(vpc)
    problems: list[Problem] = []
    shared = {}
    for role, prefix in (
        ("cluster", settings.cluster_subnet_prefix),
        ("public", PUBLIC_SUBNET_PREFIX),
        ("egress", settings.egress_subnet_prefix),
    ):
        block = cursor.block(_block_prefix(prefix)) if prefix > vpc.prefixlen + 1 else None
        if block is None:
            problems.append(
                Problem(
                    f"{NAMESPACE}:vpcCidr",
                    f"{vpc} has no room for the {role} subnets ({MAX_AZS} x /{prefix}); "
                    f"use a larger range or a longer egress:{role}SubnetPrefix",
                )
            )
            shared[role] = ()
        else:
            shared[role] = _zonal(block, prefix, azs)

    tenants: dict[str, TenantAddresses] = {}
    if tenant_range is not None and settings.tenants:
        tenant_cursor = cursor if tenant_range == vpc else _Cursor(tenant_range)
        block_prefix = _block_prefix(settings.tenant_subnet_prefix)
        first = tenant_cursor.block(block_prefix)
        first_start = int(first.network_address) if first else None
        size = 2 ** (32 - block_prefix)
        room = 0 if first is None else (int(tenant_range.broadcast_address) + 1 - first_start) // size
        for position, tenant in enumerate(settings.tenants):
            slot = settings.slots[tenant.name]
            if slot >= room:
                problems.append(
                    Problem(
                        f"{NAMESPACE}:tenants[{position}]",
                        f"tenant {tenant.name!r} (slot {slot}) does not fit: {tenant_range} "
                        f"({tenant_range_key}) holds {room} tenant slot(s) of {MAX_AZS} x "
                        f"/{settings.tenant_subnet_prefix}; use a larger {tenant_range_key} or a longer "
                        "egress:tenantSubnetPrefix",
                    )
                )
                continue
            block = ipaddress.IPv4Network((first_start + slot * size, block_prefix))
            tenants[tenant.name] = TenantAddresses(
                tenant.name, slot, _zonal(block, settings.tenant_subnet_prefix, azs)
            )
    if problems:
        raise AddressPlanError(problems)
    return AddressPlan(
        vpc_cidr=vpc,
        cluster_subnets=shared["cluster"],
        public_subnets=shared["public"],
        egress_subnets=shared["egress"],
        tenant_range=tenant_range,
        tenants=tenants,
    )
