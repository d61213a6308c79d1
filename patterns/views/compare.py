"""`python -m patterns compare`: the stack's tenants planned under each of the
four patterns, side by side, ending with the seed's "When should I consider
this pattern?" applied to the numbers."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..instance_types import ipv4_per_eni
from ..offline import Graph, run
from ..registry import PATTERNS
from ..settings import NAMESPACE, ConfigError
from .cost import Estimate, estimate, nat_gateways, node_groups, price_data
from .deploy_time import modeled


@dataclass(frozen=True)
class PatternRow:
    pattern: str
    graph: Graph | None  # None when the stack does not plan under this pattern
    problems: tuple[str, ...]
    estimate: Estimate | None = None
    deploy_seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.graph is None:
            return {
                "pattern": self.pattern, "ok": False, "problems": list(self.problems), "monthlyCostUsd": None,
                "costBreakdown": [], "routableIps": None, "natGateways": None, "nodes": None,
                "sourcesPerTenant": {}, "sharedSources": {}, "modeledDeploySeconds": None, "azLossImpact": None,
            }
        plan = self.graph.plan
        return {
            "pattern": self.pattern,
            "ok": True,
            "problems": [],
            "monthlyCostUsd": self.estimate.monthly_usd,
            "costBreakdown": [line.to_json() for line in self.estimate.lines],
            "routableIps": routable_ips(self.graph),
            "natGateways": nat_gateways(self.graph),
            "nodes": nodes(self.graph),
            "sourcesPerTenant": {e.tenant: len(e.sources) for e in plan.allow_list},
            "sharedSources": {e.tenant: list(e.shared_with) for e in plan.allow_list},
            "modeledDeploySeconds": self.deploy_seconds,
            "azLossImpact": impact(self.graph),
        }


def routable_ips(graph: Graph) -> int:
    """Addresses of the VPC's primary (routable) range taken by the subnets the
    stack creates; a secondary, non-routable tenant range does not count."""
    vpc = graph.plan.settings.vpc_cidr
    cidrs = [ipaddress.IPv4Network(r.inputs["cidrBlock"]) for r in graph.by_type("aws:ec2/subnet:Subnet")]
    return sum(c.num_addresses for c in cidrs if c.subnet_of(vpc))


def nodes(graph: Graph) -> dict[str, Any]:
    by_role: dict[str, dict[str, Any]] = {}
    for group in node_groups(graph):
        role = by_role.setdefault(group.role, {"min": 0, "max": 0, "groups": 0})
        role["min"] += group.min
        role["max"] += group.max
        role["groups"] += 1
    return {
        "min": sum(r["min"] for r in by_role.values()),
        "max": sum(r["max"] for r in by_role.values()),
        "byRole": dict(sorted(by_role.items())),
    }


# --- blast radius: one AZ, one gateway --------------------------------------------


def _subnet_cidr_impact(graph: Graph, azs: int) -> dict[str, str]:
    return {
        "az": f"every tenant loses the nodes and the source subnet of that AZ (1/{azs} of its capacity); "
              "its pods in the other AZs keep leaving from its other subnets",
        "gateway": "no gateway: a failed node stops only the pods on it",
    }


def _private_nat_impact(graph: Graph, azs: int) -> dict[str, str]:
    profiles: dict[str, list[str]] = {}
    for tenant in graph.plan.settings.tenants:
        profiles.setdefault(tenant.nat_profile, []).append(tenant.name)
    widest = max(profiles.values(), key=len)
    return {
        "az": f"that AZ's {len(profiles)} private NAT gateway(s) go with it; tenants' pods in the other AZs leave "
              f"through their own AZ's NAT (routes are per AZ): 1/{azs} of every tenant's capacity is lost",
        "gateway": f"a NAT gateway serves one profile in one AZ: up to {len(widest)} tenant(s) "
                   f"({', '.join(widest)}) lose egress for their pods in that AZ; AWS builds each NAT gateway "
                   "redundantly within its AZ",
    }


def _cilium_impact(graph: Graph, azs: int) -> dict[str, str]:
    tenants = len(graph.plan.settings.tenants)
    policies = graph.by_type("kubernetes:cilium.io/v2:CiliumEgressGatewayPolicy")
    if len(policies) == tenants * azs:
        # One policy per tenant per AZ: a pod leaves through its own AZ's gateway only.
        return {
            "az": f"that AZ's gateway node goes with it; the policies are per AZ, so only the tenants' pods on "
                  f"nodes in that AZ (about 1/{azs} of each tenant) lose egress, the other AZs keep theirs",
            "gateway": f"a gateway node carries every tenant's pods in its AZ (about 1/{azs} of each of the "
                       f"{tenants} tenants); open-source Cilium has no egress IP failover: their traffic is "
                       "dropped until a replacement node takes the AZ's ENI",
        }
    return {
        "az": f"that AZ's gateway node goes with it: pods Cilium assigned to it (about 1/{azs} of each of the "
              f"{tenants} tenants' pods, in every AZ) lose egress until Cilium reassigns them",
        "gateway": f"one gateway node is every tenant's path for the pods assigned to it (about 1/{azs}); "
                   "open-source Cilium has no egress IP failover: their traffic is dropped until the node is "
                   "replaced or the Node object is deleted",
    }


def _istio_impact(graph: Graph, azs: int) -> dict[str, str]:
    (gateway,) = [r for r in graph.by_type("kubernetes:helm.sh/v3:Release") if r.inputs.get("chart") == "gateway"]
    replicas = gateway.inputs["values"]["autoscaling"]["minReplicas"]
    return {
        "az": f"the gateway replicas in that AZ go with it; the others (at least {replicas} replicas spread "
              f"over {azs} AZs) carry every tenant, from the remaining egress subnets",
        "gateway": f"one of at least {replicas} gateway replicas: its connections reset, new ones go to the "
                   "others; no tenant loses its path",
    }


IMPACT: dict[str, Callable[[Graph, int], dict[str, str]]] = {
    "subnet-cidr": _subnet_cidr_impact,
    "private-nat": _private_nat_impact,
    "cilium": _cilium_impact,
    "istio": _istio_impact,
}


def impact(graph: Graph) -> dict[str, str]:
    return IMPACT[graph.plan.settings.pattern](graph, len(graph.plan.settings.availability_zones))


# --- the seed's guidance, applied ---------------------------------------------------

# "When should I consider to adopt this pattern?", from the seed (AWS Containers
# blog, "On-premises egress design patterns for Amazon EKS"), shortened.
SEED_GUIDANCE = {
    "subnet-cidr": "a hybrid architecture with a relatively low number of legacy application access patterns, "
                   "or a migration phase that must support their traditional access",
    "private-nat": "few applications and access patterns whose aggregated traffic volume is not a cost "
                   "challenge, or an upstream network that overlaps the VPC range",
    "cilium": "a large number of applications and access patterns, in a brownfield AWS environment that "
              "cannot be crafted to meet the upstream environment",
    "istio": "a high number of upstream applications and access patterns, or dynamic ones; a brownfield VPC "
             "that cannot change; a gradual migration of upstream applications",
}


def _per_tenant(row: PatternRow, prefix: str) -> float:
    """Monthly USD of the lines whose item starts with `prefix`, per tenant."""
    total = sum(line.monthly_usd or 0 for line in row.estimate.lines if line.item.startswith(prefix))
    return total / max(1, len(row.graph.plan.settings.tenants))


def guidance(row: PatternRow) -> str:
    seed = f"seed: consider it for {SEED_GUIDANCE[row.pattern]}."
    if row.graph is None:
        return f"{seed} This stack does not plan under it (see problems)."
    settings = row.graph.plan.settings
    tenants = len(settings.tenants)
    azs = len(settings.availability_zones)
    if row.pattern == "subnet-cidr":
        per_tenant = 2 ** (32 - settings.tenant_subnet_prefix) * azs
        free = settings.vpc_cidr.num_addresses - routable_ips(row.graph)
        return (f"{seed} Here each tenant takes {per_tenant:,} routable IPs ({azs} x /{settings.tenant_subnet_prefix}) "
                f"and its own node group (~${_per_tenant(row, 'tenant nodes'):,.0f}/month at minimum); "
                f"{settings.vpc_cidr} has {free:,} addresses left, room for about {free // (per_tenant * 4 // azs)} "
                "more tenants.")
    if row.pattern == "private-nat":
        rate = next((r.usd_per_gb for r in row.estimate.rates if r.item.startswith("NAT")), None)
        volume = "" if rate is None else f" every TB a tenant sends through its NAT gateways adds ${rate * 1024:,.0f}/month;"
        return (f"{seed} Here{volume} tenant subnets come from {settings.private_nat.tenant_cidr}, which needs no "
                f"routable space and may overlap on-prem; {routable_ips(row.graph):,} routable IPs in all.")
    if row.pattern == "cilium":
        limit = ipv4_per_eni(settings.gateway_instance_type)
        room = f"up to {limit - 1} tenants per {settings.gateway_instance_type} egress ENI" if limit else \
            f"the ENI address limit of {settings.gateway_instance_type} is unknown here"
        return (f"{seed} Here a tenant adds one egress IP per AZ ({azs}) and no subnet or node group; the "
                f"{azs} gateway nodes cost ~${_per_tenant(row, 'gateway nodes') * tenants:,.0f}/month; {room}; "
                "AWS supports only the VPC CNI.")
    istio_objects = 5 * sum(len(t.upstreams) for t in settings.tenants)
    return (f"{seed} Here all {tenants} tenants share the egress subnets, so the firewall tells them apart by "
            f"destination only; a new upstream is five Istio objects and no VPC change ({istio_objects} for "
            "this stack's upstreams).")


# --- running it ------------------------------------------------------------------


_TENANT_PATTERN_KEYS = ("pattern", "nextPattern", "previousPattern")


def _tenants_with(stack_config: Mapping[str, Any], change: Callable[[dict], dict]) -> dict[str, Any]:
    tenants = [change(dict(t)) for t in stack_config.get(f"{NAMESPACE}:tenants") or []]
    return {**stack_config, f"{NAMESPACE}:tenants": tenants}


def compare(stack: str, stack_config: Mapping[str, Any]) -> list[PatternRow]:
    """Every tenant under each pattern (a tenant's own `pattern`, or a move
    under way, is set aside: each row is the whole stack under one pattern)."""
    rows = []
    whole = _tenants_with(stack_config, lambda t: {k: v for k, v in t.items() if k not in _TENANT_PATTERN_KEYS})
    for pattern in PATTERNS:
        config = {**whole, f"{NAMESPACE}:pattern": pattern}
        try:
            graph = run(stack, config)
        except ConfigError as error:
            rows.append(PatternRow(pattern, None, tuple(str(p) for p in error.problems)))
            continue
        rows.append(PatternRow(pattern, graph, (), estimate(graph), modeled(graph).seconds))
    return rows


def to_json(rows: list[PatternRow]) -> dict[str, Any]:
    return {"patterns": [row.to_json() for row in rows]}


def to_text(stack: str, rows: list[PatternRow]) -> str:
    label = price_data()["label"]
    names = [row.pattern for row in rows]
    data = [row.to_json() for row in rows]

    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]
        if not row["ok"] and key != "ok":
            return "-"
        if key == "ok":
            return "yes" if value else "NO"
        if key == "monthlyCostUsd":
            unpriced = [line["item"] for line in row["costBreakdown"] if line["monthlyUsd"] is None]
            return f"${value:,.0f}" + (f" + unpriced: {', '.join(unpriced)}" if unpriced else "")
        if key == "natGateways":
            return f"{value['private']} private, {value['public']} public"
        if key == "nodes":
            roles = ", ".join(f"{k} {v['min']}-{v['max']}" for k, v in value["byRole"].items())
            return f"{value['min']}-{value['max']} ({roles})"
        if key == "sourcesPerTenant":
            return ", ".join(f"{t} {n}" for t, n in value.items())
        if key == "sharedSources":
            shared = sorted(t for t, others in value.items() if others)
            return "own per tenant" if not shared else f"shared: {', '.join(shared)}"
        if key == "modeledDeploySeconds":
            return f"{value // 60} min {value % 60:02d} s"
        if key == "routableIps":
            return f"{value:,}"
        return str(value)

    rows_out = [
        ("plans", "ok"), (f"monthly cost ({label})", "monthlyCostUsd"), ("routable IPs", "routableIps"),
        ("NAT gateways", "natGateways"), ("nodes min-max", "nodes"), ("sources per tenant", "sourcesPerTenant"),
        ("source identity", "sharedSources"), ("modeled deploy", "modeledDeploySeconds"),
    ]
    width = max(len(title) for title, _ in rows_out)
    lines = [f"stack {stack}: the same tenants under each pattern (cost is an {label}: on-demand list prices, "
             "node groups at their minimum, no data processing)", ""]
    for title, key in rows_out:
        lines.append(f"{title:<{width}}")
        for name, row in zip(names, data):
            lines.append(f"  {name:<12} {cell(row, key)}")
    lines += ["", "losing one AZ / one gateway:"]
    for row in data:
        if row["ok"]:
            lines.append(f"  {row['pattern']}: AZ: {row['azLossImpact']['az']}")
            lines.append(f"  {' ' * len(row['pattern'])}  gateway: {row['azLossImpact']['gateway']}")
    for row in data:
        if not row["ok"]:
            lines += ["", f"{row['pattern']} does not plan for this stack:"] + [f"  - {p}" for p in row["problems"]]
    lines += ["", "when to consider each pattern:"]
    for row in rows:
        lines.append(f"  {row.pattern}: {guidance(row)}")
    return "\n".join(lines)


# --- one tenant under each pattern ----------------------------------------------------


@dataclass(frozen=True)
class TenantRow:
    """The stack with one tenant moved to `pattern` (the others as they are)."""

    pattern: str
    current: bool
    graph: Graph | None
    problems: tuple[str, ...]
    estimate: Estimate | None = None
    base: Estimate | None = None  # the stack as it is
    created: tuple[str, ...] = ()  # resources the move creates ("type name")
    deleted: tuple[str, ...] = ()

    def to_json(self, tenant: str) -> dict[str, Any]:
        if self.graph is None:
            return {"pattern": self.pattern, "current": self.current, "ok": False, "problems": list(self.problems),
                    "monthlyCostUsd": None, "monthlyCostDeltaUsd": None, "sources": [], "sharedWith": [],
                    "nodeGroups": [], "created": [], "deleted": []}
        (entry,) = [e for e in self.graph.plan.allow_list if e.tenant == tenant]
        groups = [g.name for g in node_groups(self.graph) if g.role != "system"]
        return {
            "pattern": self.pattern,
            "current": self.current,
            "ok": True,
            "problems": [],
            "monthlyCostUsd": self.estimate.monthly_usd,
            "monthlyCostDeltaUsd": round(self.estimate.monthly_usd - self.base.monthly_usd, 2),
            "sources": list(entry.sources),
            "sharedWith": list(entry.shared_with),
            "nodeGroups": groups,
            "created": list(self.created),
            "deleted": list(self.deleted),
        }


def compare_tenant(stack: str, stack_config: Mapping[str, Any], tenant: str) -> list[TenantRow]:
    """What the stack would cost and look like with `tenant` alone under each
    pattern, the others unchanged: its sources (and with whom it would share
    them), the stack's monthly estimate and its change, and the resources the
    move would create and delete (the cluster-wide pieces it would newly need
    among them). A pattern the stack cannot mix (cilium) says why."""
    names = [t.get("name") for t in stack_config.get(f"{NAMESPACE}:tenants") or []]
    if tenant not in names:
        raise ValueError(f"no tenant {tenant!r} in this stack; its tenants: {', '.join(map(str, names)) or 'none'}")
    base_graph = run(stack, stack_config)
    base = estimate(base_graph)
    current = base_graph.plan.settings.pattern_of(next(t for t in base_graph.plan.settings.tenants if t.name == tenant))
    before = {r.urn: r for r in base_graph.resources}
    rows = []
    for pattern in PATTERNS:
        def moved(t: dict) -> dict:
            if t.get("name") != tenant:
                return t
            return {**{k: v for k, v in t.items() if k not in _TENANT_PATTERN_KEYS}, "pattern": pattern}

        try:
            graph = base_graph if pattern == current else run(stack, _tenants_with(stack_config, moved))
        except ConfigError as error:
            rows.append(TenantRow(pattern, pattern == current, None, tuple(str(p) for p in error.problems)))
            continue
        after = {r.urn: r for r in graph.resources}
        label = lambda r: f"{r.type} {r.name}"  # noqa: E731
        rows.append(TenantRow(
            pattern, pattern == current, graph, (), estimate(graph), base,
            tuple(label(after[u]) for u in after if u not in before),
            tuple(label(before[u]) for u in before if u not in after),
        ))
    return rows


def tenant_to_json(tenant: str, rows: list[TenantRow]) -> dict[str, Any]:
    return {"tenant": tenant, "patterns": [row.to_json(tenant) for row in rows]}


def tenant_to_text(stack: str, tenant: str, rows: list[TenantRow]) -> str:
    label = price_data()["label"]
    lines = [f"stack {stack}: tenant {tenant} under each pattern, the other tenants as they are (cost is an "
             f"{label} of the whole stack: on-demand list prices, node groups at their minimum)", ""]
    for row in rows:
        data = row.to_json(tenant)
        head = f"{row.pattern}{' (current)' if row.current else ''}"
        if not data["ok"]:
            lines += [f"{head}: does not plan"] + [f"  - {p}" for p in data["problems"]]
            continue
        shared = f"shared with {', '.join(data['sharedWith'])}" if data["sharedWith"] else "own"
        lines += [
            f"{head}: ${data['monthlyCostUsd']:,.0f}/month ({data['monthlyCostDeltaUsd']:+,.0f})",
            f"  sources ({shared}): {', '.join(data['sources'])}",
            f"  resources: {len(data['created'])} created, {len(data['deleted'])} deleted by the move"
            + (f"; node groups: {', '.join(data['nodeGroups'])}" if data["nodeGroups"] else ""),
        ]
    lines += ["", "the move itself: README, \"Moving one tenant (runbook)\" (nextPattern, then previousPattern)"]
    return "\n".join(lines)
