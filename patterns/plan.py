"""The deployment plan: validated settings, the address plan, and per tenant the
source addresses the upstream firewall will see. Pure: known before deploy."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .addressing import AddressPlan, AddressPlanError, plan_addresses
from .admission import TenantAdmission
from .settings import NAMESPACE, ConfigError, Problem, Settings, Tenant, load_settings, slot_problems

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
    # Config keys only this pattern reads (camelCase): top-level, and per tenant.
    own_keys: tuple[str, ...] = ()
    own_tenant_keys: tuple[str, ...] = ()
    # Namespaces of the pattern's egress gateway pods: the only pods admitted
    # with a toleration for the egress gateway nodes' taint.
    gateway_namespaces: tuple[str, ...] = ()


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


def make_plan(stack: str, config: Mapping[str, Any], patterns: Mapping[str, PatternSpec]) -> Plan:
    """Config -> settings -> addresses -> allow-list. Raises ConfigError listing every problem."""

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
        problems = slot_problems(settings) + spec.checks(settings)
        if not problems:
            try:
                plan_addresses(settings, spec.tenant_range(settings), spec.tenant_range_key)
            except AddressPlanError as error:
                problems = error.problems
        return problems

    settings = load_settings(config, extra_checks=pattern_checks)
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
        _reach_warnings(settings) + list(spec.warnings(settings, addresses)) + _ignored_keys(settings, spec, patterns)
    )
    groups = spec.node_group_count(settings)
    if groups > MANAGED_NODE_GROUP_QUOTA:
        warnings.append(
            f"this stack creates {groups} managed node groups; the EKS quota 'Managed node groups "
            f"per cluster' defaults to {MANAGED_NODE_GROUP_QUOTA}: request an increase in Service "
            "Quotas before `pulumi up`"
        )
    return Plan(stack, settings, spec, addresses, allow_list, tuple(warnings))


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
