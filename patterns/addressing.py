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
from .settings.sizing import default_sizes

# AWS keeps the first four and the last address of every subnet
# (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-sizing.html).
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
    usable = usable_hosts(subnet)
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


def pinned_room(prefix: int) -> int:
    """Addresses AWS lets us assign in the pinned half of a /prefix gateway
    subnet: the half starts with AWS's reserved head, while the broadcast
    address lies in the other half."""
    return pinned_block(ipaddress.IPv4Network(f"0.0.0.0/{prefix}")).num_addresses - AWS_RESERVED_HEAD


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


# --- what would fit: the smallest range, for the messages ---------------------------


def _slots_held(range_prefix: int, shared: Iterable[int], tenant_prefix: int | None) -> int | None:
    """Tenant slots a range of this size holds after blocks of the `shared` subnet
    prefixes (in order, each aligned as the cursor aligns it); None if even those
    do not fit."""
    size, offset = 2 ** (32 - range_prefix), 0
    for prefix in shared:
        block = 2 ** (32 - _block_prefix(prefix))
        offset = -(-offset // block) * block + block
        if offset > size:
            return None
    if tenant_prefix is None:
        return 0
    block = 2 ** (32 - _block_prefix(tenant_prefix))
    return max(0, (size - -(-offset // block) * block) // block)


def _smallest_fitting(settings: Settings, roles: dict[str, int], slots: int, tenants_in_range: bool,
                      shared: bool, derived_from_range: dict[str, bool]) -> int | None:
    """The longest prefix (/16 at most, AWS's largest VPC range) of a range that
    holds the shared blocks (if `shared`) and `slots` tenant slots, with every
    derived size derived anew for that size, explicit ones kept."""
    for prefix in range(28, 15, -1):
        sizes = default_sizes(prefix)
        chosen = {role: getattr(sizes, role) if derived_from_range.get(role) else value
                  for role, value in {**roles, "tenant": settings.tenant_subnet_prefix}.items()}
        held = _slots_held(prefix, [chosen[r] for r in ("cluster", "public", "egress")] if shared else [],
                           chosen["tenant"] if tenants_in_range else None)
        if held is not None and held >= slots:
            return prefix
    return None


def _derived(settings: Settings) -> dict[str, bool]:
    """Which sizes were derived from their range rather than set in the stack file."""
    explicit = settings.explicit_subnet_prefixes
    return {"cluster": "cluster" not in explicit, "public": True, "egress": "egress" not in explicit,
            "tenant": "tenant" not in explicit}


def _slots_needed(settings: Settings) -> int:
    return max(settings.slots.values(), default=-1) + 1


def _too_small_vpc(settings: Settings, roles: dict[str, int], tenants_in_vpc: bool) -> str:
    vpc = settings.vpc_cidr
    derived = _derived(settings)
    need = _slots_needed(settings) if tenants_in_vpc else 0
    fits = _smallest_fitting(settings, roles, need, tenants_in_vpc, True, derived)
    subnets = ", ".join(f"{MAX_AZS} x /{prefix} {role}" for role, prefix in roles.items())
    fixes = [f"use a /{fits} or larger egress:vpcCidr" if fits else "no VPC range (at most /16) holds them"]
    fixes += [f"a longer egress:{role}SubnetPrefix" for role in ("cluster", "egress")]
    return f"{vpc} is too small for the shared subnets ({subnets}); " + ", or ".join(fixes)


def _tenant_fix(settings: Settings, roles: dict[str, int], tenant_range: ipaddress.IPv4Network, key: str) -> str:
    in_vpc = tenant_range == settings.vpc_cidr
    fits = _smallest_fitting(settings, roles, _slots_needed(settings), True, in_vpc, _derived(settings))
    larger = f"use a /{fits} or larger {key}" if fits else f"{key} cannot grow enough (AWS: /16 at most)"
    return f"{larger}, or a longer egress:tenantSubnetPrefix"


def tenant_subnet_prefix(settings: Settings, tenant_range: ipaddress.IPv4Network) -> int:
    """The stack file's tenantSubnetPrefix, else the default for the range the
    tenant subnets are carved from (the VPC, or private-nat's tenantCidr)."""
    if "tenant" in settings.explicit_subnet_prefixes:
        return settings.tenant_subnet_prefix
    return default_sizes(tenant_range.prefixlen).tenant


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
    roles = {"cluster": settings.cluster_subnet_prefix, "public": settings.public_subnet_prefix,
             "egress": settings.egress_subnet_prefix}
    blocks = {role: cursor.block(_block_prefix(prefix)) if prefix > vpc.prefixlen + 1 else None
              for role, prefix in roles.items()}
    shared = {role: _zonal(block, roles[role], azs) if block else () for role, block in blocks.items()}
    in_vpc = tenant_range == vpc and bool(settings.tenants)
    if not all(blocks.values()):
        problems.append(Problem(f"{NAMESPACE}:vpcCidr", _too_small_vpc(settings, roles, in_vpc)))

    tenants: dict[str, TenantAddresses] = {}
    if tenant_range is not None and settings.tenants and all(blocks.values()):
        tenant_cursor = cursor if tenant_range == vpc else _Cursor(tenant_range)
        tenant_prefix = tenant_subnet_prefix(settings, tenant_range)
        block_prefix = _block_prefix(tenant_prefix)
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
                        f"/{tenant_prefix}; "
                        + _tenant_fix(settings, roles, tenant_range, tenant_range_key),
                    )
                )
                continue
            block = ipaddress.IPv4Network((first_start + slot * size, block_prefix))
            tenants[tenant.name] = TenantAddresses(
                tenant.name, slot, _zonal(block, tenant_prefix, azs)
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
