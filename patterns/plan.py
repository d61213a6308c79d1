"""The deployment plan: validated settings, the address plan, and per tenant the
source addresses the upstream firewall will see. Pure: known before deploy."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .addressing import AddressPlan, AddressPlanError, plan_addresses
from .admission import KUBERNETES_PREFIX, PLATFORM_NAMESPACES, TenantAdmission
from .instance_types import node_ip_warnings
from .assignment import OUTPUT as ASSIGNMENT_OUTPUT, Assignment, assign, previous_assignment
from .settings import NAMESPACE, ConfigError, Problem, Settings, Tenant, load_settings

# The default EKS quota of managed node groups per cluster (adjustable).
MANAGED_NODE_GROUP_QUOTA = 30


@dataclass(frozen=True)
class Destination:
    name: str
    cidr: str
    host: str | None
    ports: tuple[int, ...]
    protocol: str


@dataclass(frozen=True)
class TenantAllowList:
    tenant: str
    namespace: str
    sources: tuple[str, ...]  # CIDRs or /32s the firewall sees as this tenant
    destinations: tuple[Destination, ...]
    # Other tenants whose traffic leaves from (some of) the same sources: the
    # firewall can then tell these tenants apart by destination only.
    shared_with: tuple[str, ...] = ()

    @property
    def source_identity(self) -> str:
        return "shared" if self.shared_with else "own"

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "namespace": self.namespace,
            "sources": list(self.sources),
            "sourceIdentity": self.source_identity,
            "sharedWith": list(self.shared_with),
            "destinations": [
                {"name": d.name, "cidr": d.cidr, "host": d.host, "ports": list(d.ports), "protocol": d.protocol}
                for d in self.destinations
            ],
        }


@dataclass(frozen=True)
class NamespaceSpec:
    """What a pattern wants of a tenant namespace besides the shared defaults."""

    egress_rules: list[dict[str, Any]]  # NetworkPolicy egress rules beyond DNS and the namespace itself
    labels: dict[str, str] = field(default_factory=dict)


def upstream_egress_rules(tenant: Tenant) -> list[dict[str, Any]]:
    """NetworkPolicy egress rules: the tenant's upstreams, on their ports only."""
    return [
        {
            "to": [{"ipBlock": {"cidr": str(upstream.cidr)}}],
            "ports": [{"protocol": "TCP", "port": port} for port in upstream.ports],
        }
        for upstream in tenant.upstreams
    ]


@dataclass(frozen=True)
class PatternSpec:
    """What a pattern adds to the shared base, as pure data and functions."""

    name: str
    summary: str
    # The pattern's ComponentResource: (name, plan, network, cluster, cni, namespaces, opts).
    component: type
    # Builds the pod network: (name, plan, cluster, opts) -> Cni component.
    cni: Callable[..., Any]
    # Where tenant subnets live: None (no tenant subnets) or a range derived from settings.
    tenant_range: Callable[[Settings], ipaddress.IPv4Network | None]
    # The source addresses the firewall sees for one tenant.
    sources: Callable[[Settings, AddressPlan, Tenant], list[str]]
    # The admission rules that give tenants' pods their egress identity and
    # refuse it to every other pod (added to the guardrails every pattern gets).
    admission: TenantAdmission
    # The config key of the tenant range, for messages.
    tenant_range_key: str = f"{NAMESPACE}:vpcCidr"
    # The tenant namespace's egress allowance and labels; default: its upstreams.
    tenant_namespace: Callable[[Settings, Tenant], NamespaceSpec] = (
        lambda settings, tenant: NamespaceSpec(upstream_egress_rules(tenant))
    )
    checks: Callable[[Settings], list[Problem]] = lambda settings: []
    warnings: Callable[[Settings, AddressPlan], list[str]] = lambda settings, addresses: []
    # Managed node groups this pattern creates (system group included), for the quota warning.
    node_group_count: Callable[[Settings], int] = lambda settings: 1
    # The pattern pins addresses in the gateway subnets' pinned half (egress IPs,
    # NAT IPs): a direct switch between two such patterns would pin addresses the
    # other still holds until the end of the update.
    pins_gateway_addresses: bool = False
    # The pattern's gateway nodes took addresses anywhere in the gateway subnets
    # until the base reserved the pinned half (istio; cilium always reserved it).
    gateway_nodes: bool = False
    # The pattern's node groups that span every AZ: a new AZ replaces them
    # (aws.eks.NodeGroup subnet_ids forces replacement). Named for the plan's warning.
    multi_az_node_groups: Callable[[Settings], list[str]] = lambda settings: []
    # Config keys only this pattern reads (camelCase): top-level, and per tenant.
    own_keys: tuple[str, ...] = ()
    own_tenant_keys: tuple[str, ...] = ()
    # Namespaces of the pattern's egress gateway pods: the only pods admitted
    # with a toleration for the egress gateway nodes' taint.
    gateway_namespaces: tuple[str, ...] = ()
    # Namespaces the pattern creates: no tenant may be given one, under any pattern.
    own_namespaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    stack: str
    settings: Settings
    spec: PatternSpec
    addresses: AddressPlan
    allow_list: tuple[TenantAllowList, ...]
    warnings: tuple[str, ...] = field(default=())

    def allow_list_json(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.allow_list]


def make_plan(stack: str, config: Mapping[str, Any], patterns: Mapping[str, PatternSpec],
              previous_outputs: Mapping[str, Any] | None = None) -> Plan:
    """Config + the previous deploy's outputs -> settings -> addresses -> allow-list.
    Raises ConfigError listing every problem."""
    try:
        previous = previous_assignment(previous_outputs)
    except ValueError as error:
        raise ConfigError([Problem(f"{NAMESPACE}:{ASSIGNMENT_OUTPUT}", str(error))]) from None

    def assigned(settings: Settings) -> tuple[Settings, list[Problem]]:
        assignment, problems = assign(settings, previous)
        return settings.with_assignment(assignment), problems

    def pattern_checks(settings: Settings) -> list[Problem]:
        spec = patterns.get(settings.pattern)
        if spec is None:
            return [
                Problem(
                    f"{NAMESPACE}:pattern",
                    f"{settings.pattern!r} is not available in this version; "
                    f"use one of: {', '.join(sorted(patterns))}",
                )
            ]
        settings, problems = assigned(settings)
        problems += _switch_problems(settings, spec, previous, patterns) + spec.checks(settings) + _reserved_namespace_problems(settings, patterns)
        if not problems:
            try:
                plan_addresses(settings, spec.tenant_range(settings), spec.tenant_range_key)
            except AddressPlanError as error:
                problems = error.problems
        return problems

    settings, _ = assigned(load_settings(config, extra_checks=pattern_checks))
    spec = patterns[settings.pattern]
    try:
        addresses = plan_addresses(settings, spec.tenant_range(settings), spec.tenant_range_key)
    except AddressPlanError as error:  # pragma: no cover - checked above
        raise ConfigError(error.problems) from None
    allow_list = _with_shared_sources(
        TenantAllowList(
            tenant=t.name,
            namespace=t.k8s_namespace,
            sources=tuple(spec.sources(settings, addresses, t)),
            destinations=tuple(
                Destination(u.name, str(u.cidr), u.host, tuple(u.ports), u.protocol) for u in t.upstreams
            ),
        )
        for t in settings.tenants
    )
    warnings = (
        _reach_warnings(settings) + _dns_warnings(settings) + list(spec.warnings(settings, addresses))
        + _ignored_keys(settings, spec, patterns)
    )
    warnings += _transit_gateway_warnings(settings, addresses) + _switch_warnings(settings, spec, previous, patterns)
    warnings += _day2_warnings(settings, spec, previous, bool(previous_outputs))
    warnings += node_ip_warnings(settings, addresses)
    return Plan(stack, settings, spec, addresses, allow_list, tuple(warnings))


def _day2_warnings(settings: Settings, spec: PatternSpec, previous: Assignment | None, deployed: bool) -> list[str]:
    """What this update does to a running stack that the plan alone does not show."""
    warnings = []
    assignment = settings.assignment
    groups = spec.node_group_count(settings)
    if deployed and previous is None:
        warnings.append(
            f"the previous deploy exported no '{ASSIGNMENT_OUTPUT}': slots, AZ positions and admin entries follow "
            "list positions this once (as before) and are kept from now on; make this update without "
            "reordering, inserting or removing tenants, AZs or admins"
        )
    new_azs = [az for az in settings.availability_zones if previous and az not in previous.availability_zones]
    replaced = spec.multi_az_node_groups(settings) if new_azs else []
    if new_azs:
        warnings.append(
            f"new AZ(s) {', '.join(new_azs)}: the control plane stays in "
            f"{', '.join(assignment.control_plane_azs)} (EKS cannot add AZs to a cluster) and the system nodes "
            "with it; the new AZs get node and gateway capacity"
            + (
                f". Node groups spanning every AZ get a subnet there, which replaces them (NodeGroup subnet_ids "
                f"forces replacement): {', '.join(replaced)}. Each replacement is created and joins before the old "
                "group is deleted and drained; see README, 'Day-2 operations'"
                if replaced else "; no node group is replaced"
            )
        )
    if groups + len(replaced) > MANAGED_NODE_GROUP_QUOTA:
        during = f" ({groups} + {len(replaced)} replacements while old and new coexist)" if replaced else ""
        warnings.append(
            f"this stack creates {groups + len(replaced)} managed node groups{during}; the EKS quota 'Managed "
            f"node groups per cluster' defaults to {MANAGED_NODE_GROUP_QUOTA}: request an increase in Service "
            "Quotas before `pulumi up`"
        )
    for name, slot in assignment.tenants.items():
        if name not in settings.slots:
            warnings.append(
                f"tenant {name!r} was removed; its slot {slot} stays reserved while the firewall may still trust "
                f"its addresses: list it in {NAMESPACE}:releasedTenants to free the slot"
            )
    for az, position in assignment.availability_zones.items():
        if az not in settings.availability_zones:
            warnings.append(
                f"AZ {az!r} was removed; its position {position} stays reserved: list it in "
                f"{NAMESPACE}:releasedAvailabilityZones to free it"
            )
    return warnings


def _switch_problems(settings: Settings, spec: PatternSpec, previous: Assignment | None,
                     patterns: Mapping[str, PatternSpec]) -> list[Problem]:
    """Pulumi deletes what a program no longer declares only after creating what
    it newly declares, so in one update the new pattern's pinned addresses (NAT
    gateways, egress ENIs) are created while the old pattern's still hold theirs.
    Both patterns pin from the start of the same reserved block, and their
    addresses must never move (the firewall trusts them): such a switch takes two
    updates, through a pattern that pins nothing there."""
    old = patterns.get(previous.pattern) if previous and previous.pattern else None
    if old is None or old is spec or not (old.pins_gateway_addresses and spec.pins_gateway_addresses):
        return []
    via = " or ".join(p.name for p in patterns.values() if not p.pins_gateway_addresses)
    return [
        Problem(
            f"{NAMESPACE}:pattern",
            f"a switch from {old.name} to {spec.name} in one update would create {spec.name}'s pinned addresses in "
            f"the gateway subnets while {old.name}'s still hold them (Pulumi deletes the old resources last): "
            f"switch to {via} first, `pulumi up`, then to {spec.name}",
        )
    ]


def _switch_warnings(settings: Settings, spec: PatternSpec, previous: Assignment | None,
                     patterns: Mapping[str, PatternSpec]) -> list[str]:
    old = patterns.get(previous.pattern) if previous and previous.pattern else None
    if old is None or old is spec or not (old.gateway_nodes and spec.pins_gateway_addresses):
        return []
    return [
        f"switching from {old.name}: its gateway nodes get addresses outside the pinned half of the gateway "
        "subnets only since the base reserves it; a gateway node launched before that (by a version of this "
        f"program older than the reservation) may hold an address {spec.name} pins, so replace the {old.name} "
        "gateway nodes once before this switch if the stack was deployed that long ago"
    ]


def _transit_gateway_warnings(settings: Settings, addresses: AddressPlan) -> list[str]:
    """A VPC with a non-routable secondary range does not propagate to the transit
    gateway (it would advertise that range too): someone must route the primary one."""
    tenant_range = addresses.tenant_range
    secondary = tenant_range is not None and not tenant_range.subnet_of(settings.vpc_cidr)
    if not settings.transit_gateway_id or not secondary or settings.transit_gateway_route_table_id:
        return []
    return [
        f"the transit gateway attachment does not propagate this VPC's ranges, since that would advertise "
        f"{tenant_range} (egress:privateNat.tenantCidr) too: route {settings.vpc_cidr} (egress:vpcCidr), and only "
        "it, to the attachment in the transit gateway route table on-prem traffic uses, or name that table in "
        "egress:transitGatewayRouteTableId (this account's) and the stack routes it"
    ]


def _reach_warnings(settings: Settings) -> list[str]:
    """Operator ranges the VPC has no route back to cannot reach the private API endpoint."""
    key = f"{NAMESPACE}:apiAccessCidrs" if settings.api_access_cidrs else f"{NAMESPACE}:onPremCidrs"
    routed = [settings.vpc_cidr, *(settings.on_prem_cidrs if settings.transit_gateway_id else [])]
    unrouted = [c for c in settings.api_access_ranges if not any(c.subnet_of(r) for r in routed)]
    if not unrouted:
        return []
    why = ("only egress:onPremCidrs are routed (to the transit gateway)" if settings.transit_gateway_id
           else "without egress:transitGatewayId nothing routes them")
    return [
        f"{key} {', '.join(map(str, unrouted))}: the VPC has no route back to these ranges ({why}), so the "
        "private API endpoint cannot answer them; run `pulumi up` from a routed range, set "
        "egress:transitGatewayId, or use egress:endpointPublicAccessCidrs"
    ]


def _with_shared_sources(entries: Iterable[TenantAllowList]) -> tuple[TenantAllowList, ...]:
    """Marks the tenants whose sources overlap another tenant's (istio's egress
    subnets, a shared private-nat profile): derived from the addresses
    themselves, so no pattern can claim own sources it does not have."""
    entries = list(entries)
    networks = [[ipaddress.IPv4Network(s) for s in e.sources] for e in entries]

    def overlap(a: int, b: int) -> bool:
        return any(x.overlaps(y) for x in networks[a] for y in networks[b])

    return tuple(
        replace(entry, shared_with=tuple(
            other.tenant for j, other in enumerate(entries) if j != i and overlap(i, j)
        ))
        for i, entry in enumerate(entries)
    )


def reserved_namespaces(patterns: Mapping[str, PatternSpec]) -> tuple[str, ...]:
    """Every namespace the stack creates or Kubernetes keeps, under any pattern,
    so a change of pattern cannot hand a tenant one."""
    return tuple(sorted({*PLATFORM_NAMESPACES, *(ns for spec in patterns.values() for ns in spec.own_namespaces)}))


def _reserved_namespace_problems(settings: Settings, patterns: Mapping[str, PatternSpec]) -> list[Problem]:
    reserved = reserved_namespaces(patterns)
    problems = []
    for index, tenant in enumerate(settings.tenants):
        namespace = tenant.k8s_namespace
        if namespace in reserved or namespace.startswith(KUBERNETES_PREFIX):
            field = "namespace" if tenant.namespace else "name"
            problems.append(Problem(
                f"{NAMESPACE}:tenants[{index}].{field}",
                f"namespace {namespace!r} is reserved (Kubernetes' own, 'kube-*', or one this stack creates: "
                f"{', '.join(n for n in reserved if n not in ('default', 'kube-system', 'kube-public', 'kube-node-lease'))}); "
                "set the tenant's namespace to another name",
            ))
    return problems


def _dns_warnings(settings: Settings) -> list[str]:
    """Upstreams named by host need on-prem names to resolve in the VPC."""
    hosts = sorted({u.host for t in settings.tenants for u in t.upstreams if u.host})
    dns = settings.on_prem_dns
    unresolved = [h for h in hosts if dns is None or not dns.covers(h.removeprefix("*."))]
    if not unresolved:
        return []
    if dns is None:
        why = "nothing forwards on-prem names from the VPC: set egress:onPremDns {domains, resolverIps}"
    else:
        why = "they are under none of egress:onPremDns.domains: add their domains there"
    return [
        f"upstream hosts {', '.join(unresolved)} resolve in the cluster only if the VPC can resolve on-prem "
        f"names; {why}, or make sure another Route 53 Resolver rule shared with this VPC covers them"
    ]


def _ignored_keys(settings: Settings, spec: PatternSpec, patterns: Mapping[str, PatternSpec]) -> list[str]:
    """Keys that only other patterns read: kept (a stack may switch back), but said."""
    def owner(key: str, tenant_level: bool) -> str | None:
        for other in patterns.values():
            if other is not spec and key in (other.own_tenant_keys if tenant_level else other.own_keys):
                return other.name
        return None

    def set_keys(model) -> list[str]:
        return [type(model).model_fields[name].alias or name for name in sorted(model.model_fields_set)]

    found = [(f"{NAMESPACE}:{key}", owner(key, False)) for key in set_keys(settings)]
    for index, tenant in enumerate(settings.tenants):
        found += [(f"{NAMESPACE}:tenants[{index}].{key}", owner(key, True)) for key in set_keys(tenant)]
    return [
        f"{key} is read only by pattern {other}; it is ignored under {spec.name}"
        for key, other in found
        if other is not None
    ]
