"""Pattern 2, private-nat: tenancy as in subnet-cidr (own subnets, own tainted
node group, own namespace), but each tenant's subnets route the on-prem ranges
to the private NAT gateway of its egress profile in the same AZ. The firewall
allow-lists the NAT gateways' private IPs.

- Tenant subnets come from a secondary VPC range (egress:privateNat.tenantCidr,
  default 100.64.0.0/16) that may be reused across VPCs and may overlap on-prem:
  whatever leaves for on-prem is translated to a NAT IP.
- The NAT gateways sit in the egress subnets of the primary, routable range,
  which the base checks keep clear of on-prem (egress:onPremCidrs vs vpcCidr).
- Tenants naming the same profile share its NAT gateways and route tables (the
  seed's "consolidation"). Each profile owns a fixed block of
  NAT_GATEWAY_MAX_IPS addresses in every egress subnet, at its slot, so its IPs
  are known before deploy and never move when profiles, tenants or secondary
  IPs are added.
- The VPC CNI runs with external SNAT, so pods reach the NAT with their own IPs
  and the NAT alone translates; the tenant namespace's NetworkPolicy limits its
  pods to its own upstreams (the seed's mitigation for a shared NAT).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .addressing import AddressPlan, Subnet, pinned_room, usable_host, usable_hosts
from .cluster import Cluster, Cni, VpcCni
from .network import Network
from .plan import PatternSpec, Plan
from .settings import NAMESPACE, NAT_GATEWAY_MAX_IPS, Problem, Settings, Tenant
from .settings.aws_rules import association_restriction
from .tenancy import DEDICATED_NODES, DedicatedTenant, TenantNamespaces, path_taints

# Simultaneous connections per NAT IP to one destination (IP, port, protocol), and the
# default quota of NAT gateways per AZ (adjustable), from the AWS VPC user guide:
# https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-basics.html
# https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-gateways
CONNECTIONS_PER_NAT_IP = 55_000
NAT_GATEWAYS_PER_AZ_QUOTA = 5
KEY = f"{NAMESPACE}:privateNat"


@dataclass(frozen=True)
class Profile:
    name: str
    slot: int | None  # None: unresolved (a config problem)
    secondary_ips: int
    tenants: tuple[Tenant, ...]
    slot_key: str  # the config key the slot comes from, for messages

    @property
    def ips_per_nat(self) -> int:
        return 1 + self.secondary_ips


def profiles(settings: Settings) -> dict[str, Profile]:
    """Every profile some tenant uses, in order of first use. A profile's slot is
    pinned under egress:privateNat.profiles, or else is the slot of the tenant of
    the same name, so single-tenant stacks need no profile config at all; once
    that tenant is removed, the slot it still reserves, so the profile's NAT IPs
    (which the firewall trusts for its other tenants) stay where they are."""
    declared = settings.private_nat.profiles
    positions = {t.name: position for position, t in enumerate(settings.tenants)}
    members: dict[str, list[Tenant]] = {}
    for tenant in settings.tenants:
        members.setdefault(tenant.nat_profile, []).append(tenant)
    result = {}
    for name, tenants in members.items():
        options = declared.get(name)
        if options is not None and options.slot is not None:
            slot, slot_key = options.slot, f"{KEY}.profiles.{name}.slot"
        elif name in positions:
            slot, position = settings.slots[name], positions[name]
            slot_key = f"{NAMESPACE}:tenants[{position}].slot"
        elif name in settings.assignment.tenants:  # a removed tenant's reserved slot
            slot, slot_key = settings.assignment.tenants[name], f"{NAMESPACE}:releasedTenants"
        else:
            slot, slot_key = None, f"{KEY}.profiles.{name}.slot"
        result[name] = Profile(name, slot, options.secondary_ips if options else 0, tuple(tenants), slot_key)
    return result


def nat_ips(profile: Profile, subnet: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """The profile's NAT IPs in one egress subnet: primary first, then secondaries,
    from the profile's own block of NAT_GATEWAY_MAX_IPS addresses."""
    assert profile.slot is not None
    first = profile.slot * NAT_GATEWAY_MAX_IPS
    return [usable_host(subnet, first + i) for i in range(profile.ips_per_nat)]


def _sources(settings: Settings, addresses: AddressPlan, tenant: Tenant) -> list[str]:
    profile = profiles(settings)[tenant.nat_profile]
    return [f"{ip}/32" for subnet in addresses.egress_subnets for ip in nat_ips(profile, subnet.cidr)]


# --- checks and warnings (pure, before deploy) ------------------------------------


SHARED_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598: rarely used on-prem


def _checks(settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    tenant_cidr = settings.private_nat.tenant_cidr
    vpc = settings.vpc_cidr
    key = f"{KEY}.tenantCidr"
    if tenant_cidr.overlaps(vpc):
        problems.append(
            Problem(key, f"{tenant_cidr} overlaps egress:vpcCidr {vpc}; it is a second range of the VPC, "
                         "so pick one outside it, e.g. 100.64.0.0/16")
        )
    elif refused := association_restriction(vpc, tenant_cidr):
        rule, restricted = refused
        problems.append(
            Problem(key, f"AWS does not associate {tenant_cidr} ({restricted}) with a VPC whose primary range is "
                         f"in {rule.primary_described}; use a range in {rule.permitted}")
        )
    for index, onprem in enumerate(settings.on_prem_cidrs):
        # A subnet route more specific than the VPC's local route must match a whole
        # subnet and point at a NAT gateway, interface or GWLB endpoint, never the
        # transit gateway (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-route-tables.html,
        # https://docs.aws.amazon.com/vpc/latest/userguide/route-tables-priority.html).
        if onprem.subnet_of(tenant_cidr):
            clear = next((c for c in SHARED_SPACE.subnets(new_prefix=max(tenant_cidr.prefixlen, 16))
                          if not any(c.overlaps(o) for o in (vpc, *settings.on_prem_cidrs))), None)
            problems.append(
                Problem(f"{NAMESPACE}:onPremCidrs[{index}]",
                        f"{onprem} lies inside {KEY}.tenantCidr {tenant_cidr}, so AWS refuses its route and the "
                        "tenants could not reach it; move tenantCidr to a range clear of it"
                        + (f", e.g. {clear}" if clear else ""))
            )
    for index, tenant in enumerate(settings.tenants):
        for u, upstream in enumerate(tenant.upstreams):
            if upstream.cidr.overlaps(tenant_cidr):
                problems.append(
                    Problem(
                        f"{NAMESPACE}:tenants[{index}].upstreams[{u}].cidr",
                        f"{upstream.cidr} overlaps {KEY}.tenantCidr {tenant_cidr}: the VPC's local route "
                        "wins, so the tenant could never reach it; move tenantCidr off the upstreams' ranges",
                    )
                )

    per_subnet = usable_hosts(ipaddress.IPv4Network(f"0.0.0.0/{settings.egress_subnet_prefix}"))
    room = per_subnet // NAT_GATEWAY_MAX_IPS
    taken: dict[int, str] = {}
    positions = {t.name: i for i, t in enumerate(settings.tenants)}
    for profile in profiles(settings).values():
        if profile.slot is None:
            first = positions[profile.tenants[0].name]
            problems.append(
                Problem(
                    f"{NAMESPACE}:tenants[{first}].egressProfile",
                    f"profile {profile.name!r} has no slot: no tenant is named after it and "
                    f"{KEY}.profiles.{profile.name}.slot is not set; pin it there (a number no other "
                    "profile uses), or name an existing tenant's profile",
                )
            )
            continue
        if profile.slot in taken:
            problems.append(
                Problem(
                    profile.slot_key,
                    f"profile {profile.name!r} gets slot {profile.slot}, already held by profile "
                    f"{taken[profile.slot]!r}; pin a free slot under {KEY}.profiles.{profile.name}.slot",
                )
            )
        taken.setdefault(profile.slot, profile.name)
        if profile.slot >= room:
            problems.append(
                Problem(
                    profile.slot_key,
                    f"profile {profile.name!r} (slot {profile.slot}) does not fit: each egress subnet "
                    f"(/{settings.egress_subnet_prefix}) holds {room} profile(s) of {NAT_GATEWAY_MAX_IPS} NAT IPs; "
                    f"pin a lower slot under {KEY}.profiles.{profile.name}.slot or use a shorter "
                    "egress:egressSubnetPrefix",
                )
            )
    return problems


def _peak_connections(tenants: tuple[Tenant, ...]) -> int:
    """The most simultaneous connections the tenants may open to one destination
    (IP, port): tenants whose upstream ranges overlap on a port may meet there."""
    peak = 0
    for tenant in tenants:
        for upstream in tenant.upstreams:
            for port in upstream.ports:
                load = sum(
                    other.expected_connections_per_destination or 0
                    for other in tenants
                    if any(v.cidr.overlaps(upstream.cidr) and port in v.ports for v in other.upstreams)
                )
                peak = max(peak, load)
    return peak


def _warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    warnings: list[str] = []
    used = profiles(settings)
    public = 1 if settings.internet_egress == "nat" else 0
    per_az = len(used) + public
    detail = f"{len(used)} private (one per egress profile)" + (" + 1 public (internet egress)" if public else "")
    if per_az > NAT_GATEWAYS_PER_AZ_QUOTA:
        warnings.append(
            f"this stack puts {per_az} NAT gateways in each AZ ({detail}); the quota 'NAT gateways per "
            f"Availability Zone' defaults to {NAT_GATEWAYS_PER_AZ_QUOTA}: request an increase in Service "
            "Quotas before `pulumi up`, or let tenants share profiles"
        )
    elif per_az == NAT_GATEWAYS_PER_AZ_QUOTA:
        warnings.append(
            f"this stack puts {per_az} NAT gateways in each AZ ({detail}), the default quota 'NAT gateways "
            "per Availability Zone': another profile needs a quota increase first"
        )
    for profile in used.values():
        load = _peak_connections(profile.tenants)
        capacity = CONNECTIONS_PER_NAT_IP * profile.ips_per_nat
        if load > capacity:
            fix = (
                f"raise {KEY}.profiles.{profile.name}.secondaryIps (at most {NAT_GATEWAY_MAX_IPS - 1}) or "
                if profile.ips_per_nat < NAT_GATEWAY_MAX_IPS
                else ""
            )
            warnings.append(
                f"profile {profile.name!r}: tenants {', '.join(t.name for t in profile.tenants)} expect up to "
                f"{load:,} simultaneous connections to one destination, more than the {capacity:,} one NAT "
                f"gateway with {profile.ips_per_nat} IP(s) holds ({CONNECTIONS_PER_NAT_IP:,} per IP; one AZ's "
                f"NAT may carry all of them); {fix}move tenants to another profile"
            )
        upstream_sets = {frozenset((str(u.cidr), tuple(u.ports)) for u in t.upstreams) for t in profile.tenants}
        if len(upstream_sets) > 1:
            warnings.append(
                f"profile {profile.name!r} is shared by tenants with different upstreams "
                f"({', '.join(t.name for t in profile.tenants)}): the firewall sees one source for all of "
                "them, so only their namespaces' NetworkPolicies keep each to its own upstreams"
            )
    pinned = pinned_room(settings.egress_subnet_prefix)
    for profile in used.values():
        if profile.slot is not None and profile.slot * NAT_GATEWAY_MAX_IPS + profile.ips_per_nat > pinned:
            warnings.append(
                f"profile {profile.name!r} (slot {profile.slot}): its NAT IPs lie beyond the reserved half of the "
                f"/{settings.egress_subnet_prefix} gateway subnets, where another pattern's gateway nodes could take "
                "them after a change of pattern; they stay where they are (the firewall trusts them), but new "
                f"profiles fit the reserved half below slot {pinned // NAT_GATEWAY_MAX_IPS}"
            )
    for name in settings.private_nat.profiles:
        if name not in used:
            warnings.append(f"{KEY}.profiles.{name} is not used by any tenant (egressProfile); it creates nothing")
    if not settings.transit_gateway_id:
        warnings.append(
            "egress:transitGatewayId is empty: the NAT subnets get no on-prem route from this stack; "
            "add one (e.g. a VPN or Direct Connect gateway route) to the cluster route tables yourself"
        )
    return warnings


# --- the component ------------------------------------------------------------------


class PrivateNat(pulumi.ComponentResource):
    def __init__(self, name: str, plan: Plan, network: Network, cluster: Cluster, cni: Cni,
                 namespaces: TenantNamespaces, opts: pulumi.ResourceOptions | None = None):
        super().__init__("egress:patterns:PrivateNat", name, None, opts)
        settings = plan.settings
        tags = {"egress/stack": plan.stack}
        # The tenant range is non-routable (reused across VPCs), so with internet
        # egress over the transit gateway tenants must leave translated: their
        # default route goes to the profile's NAT too, whose subnet sends it on.
        internet_via_nat = settings.internet_egress == "transit-gateway"

        # NAT subnets: the egress subnets (primary, routable range), routed like the
        # cluster subnets: on-prem to the transit gateway, internet per internetEgress.
        self.nat_subnets = network.gateway_subnets

        self.nat_gateways: dict[str, dict[str, aws.ec2.NatGateway]] = {}
        self.route_tables: dict[str, dict[str, aws.ec2.RouteTable]] = {}
        for profile in profiles(settings).values():
            self.nat_gateways[profile.name] = {}
            self.route_tables[profile.name] = {}
            for subnet in plan.addresses.egress_subnets:
                nat = self._nat_gateway(name, profile, subnet, tags)
                table_name = f"{name}-profile-{profile.name}-{subnet.az}"
                table = network.private_route_table(table_name, subnet.az, parent=self, internet=not internet_via_nat)
                destinations = [(f"onprem-{i}", str(c)) for i, c in enumerate(settings.on_prem_cidrs)]
                if internet_via_nat:
                    destinations.append(("internet", "0.0.0.0/0"))
                for suffix, cidr in destinations:
                    # Same AZ only: a NAT in another AZ would tie this AZ's egress to that AZ's health.
                    aws.ec2.Route(
                        f"{table_name}-{suffix}",
                        route_table_id=table.id,
                        destination_cidr_block=cidr,
                        nat_gateway_id=nat.id,
                        opts=pulumi.ResourceOptions(parent=table),
                    )
                self.nat_gateways[profile.name][subnet.az] = nat
                self.route_tables[profile.name][subnet.az] = table

        self.tenants = {
            tenant.name: DedicatedTenant(
                tenant.name,
                tenant,
                plan.addresses.tenants[tenant.name],
                network=network,
                cluster=cluster,
                cni=cni,
                route_tables=self.route_tables[tenant.nat_profile],
                # Subnets of the secondary range exist only once it is associated.
                subnet_depends_on=[network.secondary_cidr] if network.secondary_cidr else None,
                extra_taints=path_taints(plan, tenant),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tenant in settings.tenants
        }
        self.register_outputs(
            {
                "tenants": list(self.tenants),
                "nat_gateways": {p: [n.id for n in by_az.values()] for p, by_az in self.nat_gateways.items()},
            }
        )

    def _nat_gateway(self, name: str, profile: Profile, subnet: Subnet, tags: dict[str, str]) -> aws.ec2.NatGateway:
        ips = [str(ip) for ip in nat_ips(profile, subnet.cidr)]
        nat_name = f"{name}-nat-{profile.name}-{subnet.az}"
        return aws.ec2.NatGateway(
            nat_name,
            connectivity_type="private",
            subnet_id=self.nat_subnets[subnet.az].id,
            # Pinned from the address plan, so the allow-list is known before deploy.
            private_ip=ips[0],
            # Always a list: [] removes secondaries when secondaryIps goes back to 0.
            secondary_private_ip_addresses=ips[1:],
            tags={**tags, "Name": nat_name, "egress/profile": profile.name},
            opts=pulumi.ResourceOptions(parent=self.nat_subnets[subnet.az]),
        )


SPEC = PatternSpec(
    name="private-nat",
    summary="tenant subnets in a secondary range + a private NAT gateway per AZ per egress profile; "
            "source = the profile's NAT IPs",
    component=PrivateNat,
    cni=lambda name, plan, cluster, opts: VpcCni(name, cluster, external_snat=True, opts=opts),
    tenant_range=lambda settings: settings.private_nat.tenant_cidr,
    tenant_range_key=f"{KEY}.tenantCidr",
    sources=_sources,
    admission=DEDICATED_NODES,
    checks=_checks,
    warnings=_warnings,
    node_group_count=lambda settings: 1 + len(settings.tenants),
    pins_gateway_addresses=True,
    external_snat=True,
    multi_az_node_groups=lambda settings: [f"tenant {t.name}" for t in settings.tenants],
    own_keys=("privateNat",),
    own_tenant_keys=("egressProfile", "expectedConnectionsPerDestination"),
)
