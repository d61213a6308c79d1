"""The deployment plan: validated settings, the address plan, and per tenant the
source addresses the upstream firewall will see. Pure: known before deploy."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .addressing import AddressPlan, AddressPlanError, plan_addresses
from .admission import KUBERNETES_PREFIX, PLATFORM_NAMESPACES, TenantAdmission
from .instance_types import node_ip_warnings
from .assignment import OUTPUT as ASSIGNMENT_OUTPUT, Assignment, assign, previous_assignment
from .settings import NAMESPACE, ConfigError, Problem, Settings, Tenant, load_settings

# The default EKS quota of managed node groups per cluster, adjustable
# (https://docs.aws.amazon.com/eks/latest/userguide/service-quotas.html).
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
    # The pattern replaces the VPC CNI for every pod (cilium): it cannot share a
    # cluster with another pattern.
    replaces_cni: bool = False
    # The pattern's VPC CNI leaves SNAT to the VPC (private-nat): in a mixed
    # stack its CNI serves every tenant (see Plan.cni_spec).
    external_snat: bool = False


@dataclass(frozen=True)
class Plan:
    stack: str
    settings: Settings
    spec: PatternSpec  # egress:pattern's, the default of every tenant
    addresses: AddressPlan  # the shared blocks, and every tenant's subnets under its own pattern
    allow_list: tuple[TenantAllowList, ...]
    warnings: tuple[str, ...] = field(default=())
    # Per pattern in use, the plan its component is built from: the same plan
    # restricted to the tenants with a path under that pattern (see `part_of`).
    parts: Mapping[str, Plan] = field(default_factory=dict)

    def allow_list_json(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.allow_list]

    @property
    def mixed(self) -> bool:
        """Some tenant names its own pattern or is moving: say each tenant's."""
        return any(t.pattern or t.next_pattern or t.previous_pattern for t in self.settings.tenants)

    def path_note(self, name: str) -> str:
        """', pattern X' (and the move under way) for a tenant of a mixed stack."""
        if not self.mixed:
            return ""
        tenant = _tenant(self.settings, name)
        note = f", pattern {self.settings.pattern_of(tenant)}"
        if tenant.next_pattern:
            note += f"; moving to {tenant.next_pattern}: published, traffic not moved yet"
        if tenant.previous_pattern:
            note += f"; moving from {tenant.previous_pattern}: traffic moved, old path still open"
        return note

    @property
    def specs(self) -> tuple[PatternSpec, ...]:
        """The patterns in use."""
        return tuple(part.spec for part in self.parts.values())

    def spec_of(self, tenant: Tenant) -> PatternSpec:
        """The pattern the tenant's traffic leaves by."""
        return self.parts[self.settings.pattern_of(tenant)].spec

    @property
    def cni_spec(self) -> PatternSpec:
        """The pattern whose pod network serves every tenant. Cilium is never
        mixed (make_plan refuses it). The VPC CNI patterns differ only in
        private-nat's external SNAT, which the others do not notice: with it
        pods leave with their own IPs, and those lie in the subnets the pattern
        already allow-lists (subnet-cidr: the tenant's subnets; istio: the
        egress gateway pods' in the egress subnets), while without it they
        would leave with their node's primary IP in the same subnets."""
        return next((s for s in self.specs if s.external_snat), self.specs[0])


def path_role(settings: Settings, tenant: Tenant, pattern: str) -> str:
    """What the tenant's path under `pattern` is: "current" (its traffic leaves
    there), "next" (built and published, not used yet) or "previous" (kept
    until the pods that still use it are gone)."""
    if settings.pattern_of(tenant) == pattern:
        return "current"
    return "next" if tenant.next_pattern == pattern else "previous"


def part_of(plan_settings: Settings, spec: PatternSpec, stack: str, tenant_names: Collection[str]) -> Plan:
    """A pattern's own plan: its tenants only, with its own address plan."""
    settings = plan_settings.restricted(tenant_names)
    addresses = plan_addresses(settings, spec.tenant_range(settings), spec.tenant_range_key)
    return Plan(stack, settings, spec, addresses, ())


def _patterns_in_use(settings: Settings, patterns: Mapping[str, PatternSpec]) -> dict[str, list[str]]:
    """Pattern name -> the tenants with a path under it, in registry order. A
    stack without tenants keeps its pattern's cluster-wide pieces."""
    used: dict[str, list[str]] = {}
    for tenant in settings.tenants:
        for pattern in settings.paths_of(tenant):
            used.setdefault(pattern, []).append(tenant.name)
    if not settings.tenants:
        used[settings.pattern] = []
    return {name: used[name] for name in patterns if name in used}


_TENANT_INDEX = re.compile(r"tenants\[(\d+)\]")


def _reindexed(text: str, part: Settings, settings: Settings) -> str:
    """A pattern's checks count tenants in its own restricted list: name the
    stack file's positions instead."""
    positions = {t.name: i for i, t in enumerate(settings.tenants)}
    return _TENANT_INDEX.sub(lambda m: f"tenants[{positions[part.tenants[int(m.group(1))].name]}]"
                             if int(m.group(1)) < len(part.tenants) else m.group(0), text)


def _mix_problems(settings: Settings, patterns: Mapping[str, PatternSpec]) -> list[Problem]:
    """Per-tenant patterns: what cannot be mixed, and moves that make no sense."""
    problems = []
    for index, tenant in enumerate(settings.tenants):
        key = f"{NAMESPACE}:tenants[{index}]"
        if tenant.next_pattern and tenant.previous_pattern:
            problems.append(Problem(
                f"{key}.nextPattern",
                "a tenant moves one step at a time: nextPattern (publish) and previousPattern (cutover) cannot be "
                "set together; finish the move under way (remove previousPattern), then set nextPattern",
            ))
        for field_, other in (("nextPattern", tenant.next_pattern), ("previousPattern", tenant.previous_pattern)):
            if other and other == settings.pattern_of(tenant):
                problems.append(Problem(
                    f"{key}.{field_}",
                    f"{other!r} is the tenant's pattern already; remove {field_} (it names the pattern the tenant "
                    "moves to or from)",
                ))
    # Cilium replaces the VPC CNI for the whole cluster (patterns/cilium), so no
    # tenant of another pattern can run beside it, and no tenant can move to or
    # from it within a stack.
    cilium = [name for name, spec in patterns.items() if spec.replaces_cni]
    using = {name: [t.name for t in settings.tenants if name in settings.paths_of(t)] for name in cilium}
    for name, tenants in using.items():
        others = [t.name for t in settings.tenants if any(p != name for p in settings.paths_of(t))]
        if not (tenants or settings.pattern == name) or not others:
            continue
        # The key of the first tenant that set the mix up: one naming another
        # pattern in a cilium stack, else one naming cilium.
        keys = ("pattern", "next_pattern", "previous_pattern")
        wrong = (lambda value: value and value != name) if settings.pattern == name else (lambda value: value == name)
        index, field_ = next((i, k) for i, t in enumerate(settings.tenants) for k in keys if wrong(getattr(t, k)))
        other = sorted({p for t in settings.tenants for p in settings.paths_of(t)} - {name})
        problems.append(Problem(
            f"{NAMESPACE}:tenants[{index}].{Tenant.model_fields[field_].alias}",
            f"{name} replaces the cluster's pod network (the VPC CNI) for every pod, so it cannot run beside "
            f"{' or '.join(other)}: tenants {', '.join(tenants) or '(all, by egress:pattern)'} would use {name}, "
            f"tenants {', '.join(others)} {' or '.join(other)}. A stack is all-{name} or {name}-free: keep these "
            f"tenants on one side (no tenant moves to or from {name} within a stack; move it through another stack)",
        ))
    return problems


def make_plan(stack: str, config: Mapping[str, Any], patterns: Mapping[str, PatternSpec],
              previous_outputs: Mapping[str, Any] | None = None) -> Plan:
    """Config + the previous deploy's outputs -> settings -> addresses -> allow-list.
    Raises ConfigError listing every problem."""
    try:
        previous = previous_assignment(previous_outputs)
    except ValueError as error:
        raise ConfigError([Problem(f"{NAMESPACE}:{ASSIGNMENT_OUTPUT}", str(error))]) from None
    deployed = patterns.get(previous.pattern) if previous and previous.pattern else None

    def assigned(settings: Settings) -> tuple[Settings, list[Problem]]:
        assignment, problems = assign(settings, previous)
        return settings.with_assignment(assignment), problems

    def pattern_checks(settings: Settings) -> list[Problem]:
        settings, problems = assigned(settings)
        mix = _mix_problems(settings, patterns)
        if mix:
            return problems + mix
        used = _patterns_in_use(settings, patterns)
        problems += _switch_problems([patterns[p] for p in used], deployed, patterns)
        problems += _reserved_namespace_problems(settings, patterns)
        for name, tenants in used.items():
            spec, part = patterns[name], settings.restricted(tenants)
            found = spec.checks(part)
            if not found:
                try:
                    plan_addresses(part, spec.tenant_range(part), spec.tenant_range_key)
                except AddressPlanError as error:
                    found = error.problems
            problems += [Problem(_reindexed(p.key, part, settings), _reindexed(p.message, part, settings))
                         for p in found]
        return problems

    settings, _ = assigned(load_settings(config, extra_checks=pattern_checks))
    spec = patterns[settings.pattern]
    try:
        parts = {name: part_of(settings, patterns[name], stack, tenants)
                 for name, tenants in _patterns_in_use(settings, patterns).items()}
    except AddressPlanError as error:  # pragma: no cover - checked above
        raise ConfigError(error.problems) from None
    addresses = _merged_addresses(settings, parts)

    def sources(tenant: Tenant) -> tuple[str, ...]:
        found = [source for pattern in settings.paths_of(tenant)
                 for source in parts[pattern].spec.sources(parts[pattern].settings, parts[pattern].addresses, tenant)]
        return tuple(dict.fromkeys(found))

    allow_list = _with_shared_sources(
        TenantAllowList(
            tenant=t.name,
            namespace=t.k8s_namespace,
            sources=sources(t),
            destinations=tuple(
                Destination(u.name, str(u.cidr), u.host, tuple(u.ports), u.protocol) for u in t.upstreams
            ),
        )
        for t in settings.tenants
    )
    pattern_warnings = [
        _reindexed(w, part.settings, settings)
        for part in parts.values() for w in part.spec.warnings(part.settings, part.addresses)
    ]
    specs = [part.spec for part in parts.values()]
    warnings = _reach_warnings(settings) + _dns_warnings(settings) + pattern_warnings + _ignored_keys(settings, specs, patterns)
    warnings += _transit_gateway_warnings(settings, addresses) + _switch_warnings(specs, deployed)
    warnings += _day2_warnings(settings, parts, previous, bool(previous_outputs))
    warnings += node_ip_warnings(settings, addresses)
    return Plan(stack, settings, spec, addresses, allow_list, tuple(warnings), parts)


def _merged_addresses(settings: Settings, parts: Mapping[str, Plan]) -> AddressPlan:
    """The shared blocks (the same in every part), the tenant range the VPC
    needs (a secondary range whenever a part uses one), and each tenant's
    subnets under its own pattern (during a move between two patterns with
    tenant subnets each part holds the tenant's subnets in its range)."""
    plans = list(parts.values())
    ranges = [p.addresses.tenant_range for p in plans if p.addresses.tenant_range is not None]
    secondary = [r for r in ranges if not r.subnet_of(settings.vpc_cidr)]
    tenants = {}
    for part in plans:
        for name, found in part.addresses.tenants.items():
            if name not in tenants or settings.pattern_of(_tenant(settings, name)) == part.spec.name:
                tenants[name] = found
    tenants = {t.name: tenants[t.name] for t in settings.tenants if t.name in tenants}
    return replace(plans[0].addresses, tenant_range=(secondary or ranges or [None])[0], tenants=tenants)


def _tenant(settings: Settings, name: str) -> Tenant:
    return next(t for t in settings.tenants if t.name == name)


def _day2_warnings(settings: Settings, parts: Mapping[str, Plan], previous: Assignment | None,
                   deployed: bool) -> list[str]:
    """What this update does to a running stack that the plan alone does not show."""
    warnings = []
    assignment = settings.assignment
    # Each pattern counts the system group once; the stack has one.
    groups = sum(p.spec.node_group_count(p.settings) for p in parts.values()) - (len(parts) - 1)
    if deployed and previous is None:
        warnings.append(
            f"the previous deploy exported no '{ASSIGNMENT_OUTPUT}': slots, AZ positions and admin entries follow "
            "list positions this once (as before) and are kept from now on; make this update without "
            "reordering, inserting or removing tenants, AZs or admins"
        )
    new_azs = [az for az in settings.availability_zones if previous and az not in previous.availability_zones]
    replaced = [g for p in parts.values() for g in p.spec.multi_az_node_groups(p.settings)] if new_azs else []
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


def _switch_problems(specs: list[PatternSpec], old: PatternSpec | None,
                     patterns: Mapping[str, PatternSpec]) -> list[Problem]:
    """Pulumi deletes what a program no longer declares only after creating what
    it newly declares, so in one update the new pattern's pinned addresses (NAT
    gateways, egress ENIs) are created while the old pattern's still hold theirs.
    Both patterns pin from the start of the same reserved block, and their
    addresses must never move (the firewall trusts them): such a switch takes two
    updates, through a pattern that pins nothing there. `old`: the pattern the
    previous deploy ran, if it recorded one."""
    spec = next((s for s in specs if old is not None and s is not old and s.pins_gateway_addresses
                 and old.pins_gateway_addresses and old not in specs), None)
    if old is None or spec is None:
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


def _switch_warnings(specs: list[PatternSpec], old: PatternSpec | None) -> list[str]:
    spec = next((s for s in specs if old is not None and s is not old and old.gateway_nodes
                 and s.pins_gateway_addresses and old not in specs), None)
    if old is None or spec is None:
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


def _ignored_keys(settings: Settings, specs: list[PatternSpec], patterns: Mapping[str, PatternSpec]) -> list[str]:
    """Keys that only patterns not in use read: kept (a stack may switch back), but said."""
    def owner(key: str, tenant_level: bool, readers: list[PatternSpec]) -> str | None:
        for other in patterns.values():
            if other not in readers and key in (other.own_tenant_keys if tenant_level else other.own_keys):
                return other.name
        return None

    def set_keys(model) -> list[str]:
        return [type(model).model_fields[name].alias or name for name in sorted(model.model_fields_set)]

    under = " and ".join(s.name for s in specs)
    found = [(f"{NAMESPACE}:{key}", owner(key, False, specs), under) for key in set_keys(settings)]
    for index, tenant in enumerate(settings.tenants):
        paths = [patterns[p] for p in settings.paths_of(tenant)]
        found += [(f"{NAMESPACE}:tenants[{index}].{key}", owner(key, True, paths), " and ".join(p.name for p in paths))
                  for key in set_keys(tenant)]
    return [
        f"{key} is read only by pattern {other}; it is ignored under {where}"
        for key, other, where in found
        if other is not None
    ]
