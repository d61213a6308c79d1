"""Moving one tenant to another pattern, step by step (nextPattern, then
previousPattern, then neither), in the mixed stack beside tenants of every
other mixable pattern:

- at every step the allow-list holds every source the tenant's traffic can
  leave from, derived from the planned resources themselves (its subnets'
  routes, its NAT gateways, the istio gateway's subnets), and retire drops
  the old ones;
- nobody else notices: between consecutive steps every created, changed or
  deleted resource is the moving tenant's own, a cluster-wide piece created
  for it, or a shared object whose changed parts are all the tenant's.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import re
from functools import lru_cache

import pytest

from conftest import NAT, NODE_GROUP, ROUTE, RTA, SUBNET, assert_problem, config_with, stack_config
from patterns import offline
from patterns.istio import tenant_routes
from patterns.plan import upstream_egress_rules
from patterns.tenancy import PATH_KEY

STACK = "mixed"
MOVING = "payments"  # first in the stack file; reporting (private-nat) and portal (istio) stay
MIXABLE = ("subnet-cidr", "private-nat", "istio")
STEPS = ("before", "publish", "cutover", "retire")
PAIRS = list(itertools.permutations(MIXABLE, 2))
ON_PREM = ipaddress.ip_network("10.100.0.0/14")


def step_keys(old: str, new: str, step: str) -> dict:
    return {
        "before": {"pattern": old},
        "publish": {"pattern": old, "nextPattern": new},
        "cutover": {"pattern": new, "previousPattern": old},
        "retire": {"pattern": new},
    }[step]


def moved(config: dict, keys: dict) -> dict:
    config = copy.deepcopy(config)
    (index,) = [i for i, t in enumerate(config["egress:tenants"]) if t["name"] == MOVING]
    config["egress:tenants"][index] = {**config["egress:tenants"][index], **keys}
    return config


@lru_cache(maxsize=None)
def planned_step(pattern: str, next_pattern: str | None = None, previous_pattern: str | None = None) -> offline.Graph:
    keys = {"pattern": pattern, "nextPattern": next_pattern, "previousPattern": previous_pattern}
    return offline.run(STACK, moved(stack_config(STACK), {k: v for k, v in keys.items() if v}))


def graph_of(old: str, new: str, step: str) -> offline.Graph:
    keys = step_keys(old, new, step)
    return planned_step(keys["pattern"], keys.get("nextPattern"), keys.get("previousPattern"))


# --- where the tenant's traffic can leave from, read off the graph ----------------------


def _ancestors(graph: offline.Graph, resource) -> list:
    by_urn, found = graph.by_urn(), []
    while resource.parent in by_urn:
        resource = by_urn[resource.parent]
        found.append(resource)
    return found


def reachable_sources(graph: offline.Graph, tenant: str) -> set[str]:
    """Every address the firewall can see from the tenant: per dedicated path,
    where its subnets route on-prem (a NAT gateway: its IPs; the transit
    gateway: the subnets themselves); per istio path, the gateway's subnets."""
    by_id = {r.id: r for r in graph.resources if r.custom and r.type in (NAT, SUBNET)}
    tables = {r.id: r for r in graph.by_type("aws:ec2/routeTable:RouteTable")}
    sources: set[str] = set()
    for association in graph.by_type(RTA):
        owners = _ancestors(graph, association)
        if not any(o.type == "egress:tenancy:DedicatedTenant" and o.name == tenant for o in owners):
            continue
        subnet = next(o for o in owners if o.type == SUBNET)
        table = tables[association.inputs["routeTableId"]]
        on_prem = [r.inputs for r in graph.by_type(ROUTE) if r.inputs["routeTableId"] == table.id
                   and ipaddress.ip_network(r.inputs["destinationCidrBlock"]).subnet_of(ON_PREM)]
        assert on_prem, f"{subnet.urn} has no on-prem route"
        for route in on_prem:
            if route.get("natGatewayId"):
                nat = by_id[route["natGatewayId"]].inputs
                sources |= {f"{ip}/32" for ip in [nat["privateIp"], *nat.get("secondaryPrivateIpAddresses", [])]}
            else:
                assert route.get("transitGatewayId"), route
                sources.add(subnet.inputs["cidrBlock"])
    if [t for t in graph.by_type("egress:patterns:IstioTenant") if t.name == tenant]:
        gateway = next(g for g in graph.by_type(NODE_GROUP) if g.name == "egress-gateway")
        sources |= {by_id[s].inputs["cidrBlock"] for s in gateway.inputs["subnetIds"]}
    return sources


def allow_list_of(graph: offline.Graph, tenant: str) -> list[str]:
    (entry,) = [e for e in graph.outputs["egressAllowList"] if e["tenant"] == tenant]
    return entry["sources"]


@pytest.mark.parametrize("old,new", PAIRS)
def test_at_every_step_the_allow_list_holds_every_source_the_tenant_can_leave_from(old, new):
    seen = {}
    for step in STEPS:
        graph = graph_of(old, new, step)
        reachable, listed = reachable_sources(graph, MOVING), allow_list_of(graph, MOVING)
        assert reachable, step
        assert reachable <= set(listed), f"{old} -> {new}, {step}: {sorted(reachable - set(listed))} not allow-listed"
        seen[step] = reachable
    # publish adds the new path's sources; retire keeps only them.
    assert seen["before"] < seen["publish"] == seen["cutover"]
    assert set(allow_list_of(graph_of(old, new, "retire"), MOVING)) == seen["retire"] != seen["before"]
    assert seen["retire"] == reachable_sources(planned_step(new), MOVING)


# --- the steps do what they say -----------------------------------------------------------


def _namespace(graph, tenant: str) -> dict:
    return next(n.inputs for n in graph.by_type("kubernetes:core/v1:Namespace")
                if n.inputs["metadata"]["labels"].get("egress/tenant") == tenant)


def _policy_rules(graph) -> dict[str, list[str]]:
    return {p.inputs["metadata"]["name"]: [r["name"] for r in p.inputs["spec"]["rules"]]
            for p in graph.by_type("kubernetes:kyverno.io/v1:ClusterPolicy")}


def _egress_rules(graph, tenant: str) -> list[dict]:
    return graph.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"{tenant}-allow-egress").inputs["spec"]["egress"]


def test_publish_builds_the_new_path_and_keeps_traffic_on_the_old_one():
    before, publish = graph_of("subnet-cidr", "istio", "before"), graph_of("subnet-cidr", "istio", "publish")
    assert [t.name for t in publish.by_type("egress:patterns:IstioTenant")] == ["payments", "portal"]
    # Admission, namespace labels and NetworkPolicies stay subnet-cidr's.
    assert _policy_rules(publish) == _policy_rules(before)
    assert _namespace(publish, MOVING) == _namespace(before, MOVING)
    assert _egress_rules(publish, MOVING) == _egress_rules(before, MOVING)


def test_cutover_moves_admission_and_labels_and_keeps_both_paths_open():
    cutover = graph_of("subnet-cidr", "istio", "cutover")
    rules = _policy_rules(cutover)
    assert not [r for r in rules["egress-tenant-defaults"] if r.startswith(f"{MOVING}-")]
    sidecar = next(p for p in cutover.by_type("kubernetes:kyverno.io/v1:ClusterPolicy")
                   if p.inputs["metadata"]["name"] == "egress-istio-sidecar")
    assert sidecar.inputs["spec"]["rules"][0]["match"]["any"][0]["resources"]["namespaces"] == ["payments", "portal"]
    assert _namespace(cutover, MOVING)["metadata"]["labels"]["istio-injection"] == "enabled"
    # Pods not yet restarted still go straight to their upstreams; new ones reach the gateway.
    rules = _egress_rules(cutover, MOVING)
    tenant = next(t for t in cutover.plan.settings.tenants if t.name == MOVING)
    assert all(r in rules for r in upstream_egress_rules(tenant))
    assert all(r in rules for r in _egress_rules(planned_step("istio"), MOVING))
    # The old path stays until retire.
    assert [g.name for g in cutover.by_type(NODE_GROUP) if g.name == MOVING]


@pytest.mark.parametrize("old,new", [("subnet-cidr", "private-nat"), ("private-nat", "subnet-cidr")])
def test_new_pods_land_only_on_the_current_paths_nodes(old, new):
    """Both paths have a node group labelled and tainted for the tenant; the
    one traffic does not use (yet or any more) carries one more taint, so the
    tenant's pods (which tolerate egress/tenant only) are scheduled on the
    current path's nodes."""
    def taints(graph, pattern_type: str) -> list[dict]:
        (group,) = [g for g in graph.by_type(NODE_GROUP) if g.name == MOVING
                    and any(a.type == pattern_type for a in _ancestors(graph, g))]
        return [t for t in group.inputs["taints"] if t["key"] == PATH_KEY]

    type_of = {"subnet-cidr": "egress:patterns:SubnetCidr", "private-nat": "egress:patterns:PrivateNat"}
    publish, cutover = graph_of(old, new, "publish"), graph_of(old, new, "cutover")
    assert taints(publish, type_of[old]) == [] and taints(cutover, type_of[new]) == []
    assert taints(publish, type_of[new]) == [{"key": PATH_KEY, "value": "pending", "effect": "NO_SCHEDULE"}]
    assert taints(cutover, type_of[old]) == [{"key": PATH_KEY, "value": "retiring", "effect": "NO_SCHEDULE"}]


def test_a_path_keeps_its_urns_whatever_its_role():
    """No step re-creates what an earlier step built: a path's resources have
    the same URNs as next, current and previous path."""
    for old, new in PAIRS:
        def urns_under(graph, pattern) -> set[str]:
            own = planned_step(pattern)
            return {r.urn for r in own.resources} & {r.urn for r in graph.resources}

        publish, cutover, retire = (graph_of(old, new, s) for s in ("publish", "cutover", "retire"))
        new_path = {r.urn for r in publish.resources} - {r.urn for r in graph_of(old, new, "before").resources}
        assert new_path <= {r.urn for r in cutover.resources} and new_path <= {r.urn for r in retire.resources}
        old_path = {r.urn for r in graph_of(old, new, "before").resources} - {r.urn for r in retire.resources}
        assert old_path <= {r.urn for r in publish.resources} and old_path <= {r.urn for r in cutover.resources}


# --- nobody else notices ---------------------------------------------------------------------


def _mentions(text: str, tokens: set[str]) -> bool:
    return bool(set(re.findall(r"[\w.-]+", text)) & tokens) or any(
        f"-{t}-" in f"-{text}-" for t in tokens
    )


class Owner:
    """What belongs to the moving tenant: texts naming it (its name,
    namespace, hosts only it reaches, or names built from them), its upstream
    egress rules, its istio gateway ports; and what names another tenant."""

    def __init__(self, graph: offline.Graph, tenant: str):
        settings = graph.plan.settings
        (self.tenant,) = [t for t in settings.tenants if t.name == tenant]
        self.tokens = {tenant, self.tenant.k8s_namespace}
        self.others = {n for t in settings.tenants if t.name != tenant for n in (t.name, t.k8s_namespace)}
        # Its upstreams' hosts that no other tenant uses: the gateway's entry per host is its own.
        others = [t for t in settings.tenants if t.name != tenant]
        self.tokens |= ({r.host for r in tenant_routes(settings, self.tenant)}
                        - {r.host for t in others for r in tenant_routes(settings, t)})
        self.rules = upstream_egress_rules(self.tenant)
        self.ports = {p for route in tenant_routes(settings, self.tenant) for p in route.gateway_ports}

    def names_tenant(self, text: str) -> bool:
        return _mentions(text, self.tokens)

    def owns(self, element) -> bool:
        """An element that is the tenant's alone: naming it and nobody else,
        its upstream rule, or one of its gateway ports."""
        text = json.dumps(element)
        if isinstance(element, dict) and isinstance(element.get("port"), int) and element["port"] in self.ports:
            return True
        return element in self.rules or (_mentions(text, self.tokens) and not _mentions(text, self.others))

    def scrub(self, value):
        """The value with every part that is the tenant's taken out."""
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value if not self.owns(v)]
        if isinstance(value, str):
            if value.startswith(("{", "[")):
                try:
                    return self.scrub(json.loads(value))
                except ValueError:
                    pass
            return [w for w in re.findall(r"[\w.-]+", value) if w not in self.tokens]
        return value


def leaks(before: offline.Graph, after: offline.Graph, tenant: str) -> list[str]:
    """The changes between two plans that are not the tenant's own: what
    someone else would notice. A resource is the tenant's when it or a parent
    is named after it; a pattern's component and what it holds may come and go
    with the tenant (the cluster-wide pieces it newly needs, or no longer);
    a shared resource may change only in the tenant's parts."""
    owner = Owner(after, tenant)
    old, new = before.by_urn(), after.by_urn()

    def owned(graph, resource) -> bool:
        return any(owner.names_tenant(r.name) for r in [resource, *_ancestors(graph, resource)])

    def with_its_pattern(graph, resource, other: dict) -> bool:
        """Created or deleted together with its pattern's component."""
        chain = [resource, *_ancestors(graph, resource)]
        return any(r.type.startswith("egress:patterns:") and r.urn not in other for r in chain)

    found = []
    for urn in sorted(set(old) | set(new)):
        if urn in old and urn in new:
            a, b = old[urn], new[urn]
            if a.inputs != b.inputs and not owned(after, b) and owner.scrub(a.inputs) != owner.scrub(b.inputs):
                found.append(f"changed: {urn}")
        elif urn in new:
            if not (owned(after, new[urn]) or with_its_pattern(after, new[urn], old)):
                found.append(f"created: {urn}")
        elif not (owned(before, old[urn]) or with_its_pattern(before, old[urn], new)):
            found.append(f"deleted: {urn}")
    return found


@pytest.mark.parametrize("old,new", PAIRS)
def test_moving_one_tenant_changes_nothing_of_anyone_else(old, new):
    for first, second in itertools.pairwise(STEPS):
        found = leaks(graph_of(old, new, first), graph_of(old, new, second), MOVING)
        assert not found, f"{old} -> {new}, {first} -> {second} touches others:\n" + "\n".join(found)


def test_the_leak_check_sees_another_tenants_change():
    before = graph_of("subnet-cidr", "istio", "publish")
    config = moved(stack_config(STACK), {"pattern": "subnet-cidr", "nextPattern": "istio"})
    portal = config["egress:tenants"][2]
    portal["upstreams"][0]["ports"] = [443, 8443]  # the other istio tenant's gateway ports and rules move
    found = leaks(before, offline.run(STACK, config), MOVING)
    assert any("portal" in f for f in found)
    assert any("egress-istio-egress-allow-upstreams" in f or "gateway" in f for f in found)
    config = moved(stack_config(STACK), {"pattern": "subnet-cidr", "nextPattern": "istio"})
    config["egress:systemNodes"] = {"min": 3}  # the base
    assert any("SystemNodes" in f for f in leaks(before, offline.run(STACK, config), MOVING))


# --- refusals ------------------------------------------------------------------------------------


def test_a_move_is_one_step_at_a_time_and_names_another_pattern():
    tenants = stack_config(STACK)["egress:tenants"]
    tenants[0] = {**tenants[0], "nextPattern": "istio", "previousPattern": "private-nat"}
    tenants[1] = {**tenants[1], "nextPattern": "private-nat"}
    config = config_with(STACK, tenants=tenants)
    assert_problem(config, "egress:tenants[0].nextPattern", "one step at a time", "remove previousPattern")
    assert_problem(config, "egress:tenants[1].nextPattern", "'private-nat' is the tenant's pattern already")


def test_no_move_to_or_from_cilium():
    tenants = stack_config(STACK)["egress:tenants"]
    tenants[2] = {**tenants[2], "nextPattern": "cilium"}
    assert_problem(config_with(STACK, tenants=tenants), "egress:tenants[2].nextPattern",
                   "replaces the cluster's pod network", "portal would use cilium", "no tenant moves to or from cilium")
    tenants = stack_config("cilium")["egress:tenants"]
    tenants[0] = {**tenants[0], "previousPattern": "istio"}
    assert_problem(config_with("cilium", tenants=tenants), "egress:tenants[0].previousPattern", "all-cilium or cilium-free")


def test_unknown_patterns_are_named_per_key_all_at_once():
    tenants = stack_config(STACK)["egress:tenants"]
    tenants[0]["pattern"], tenants[1]["nextPattern"], tenants[2]["previousPattern"] = "istoi", "cillium", 3
    config = config_with(STACK, tenants=tenants)
    for key in ("tenants[0].pattern", "tenants[1].nextPattern", "tenants[2].previousPattern"):
        assert_problem(config, f"egress:{key}", "is not allowed; use one of 'subnet-cidr', 'private-nat'")


@pytest.mark.parametrize("old,new", [("subnet-cidr", "private-nat"), ("subnet-cidr", "istio")])
def test_diff_of_each_step_is_the_firewall_change_and_replaces_nothing(old, new):
    """`python -m patterns diff` between consecutive steps: publish adds the
    new sources, cutover changes no source, retire removes the old ones; no
    step replaces anything (a path's taint changes in place: taints are not
    among NodeGroup's replace-on-change properties, patterns/data/replacements.yaml)."""
    from patterns import diff

    sources = {step: set(allow_list_of(graph_of(old, new, step), MOVING)) for step in STEPS}
    expected = {
        "publish": (sources["publish"] - sources["before"], set()),
        "cutover": (set(), set()),
        "retire": (set(), sources["cutover"] - sources["retire"]),
    }
    for first, second in itertools.pairwise(STEPS):
        report = diff.compare(diff.side_from_graph(first, graph_of(old, new, first)),
                              diff.side_from_graph(second, graph_of(old, new, second)), STACK)
        assert not report.replaced, [c.resource.urn for c in report.replaced]
        added, removed = expected[second]
        changes = {c.tenant: c for c in report.allow_list}
        assert set(changes) <= {MOVING}
        found = changes.get(MOVING)
        assert (set(found.sources_added), set(found.sources_removed)) == (added, removed) if found else not (added or removed)
        if second == "cutover" and new == "private-nat":
            groups = [c for c in report.updated if c.resource.type == NODE_GROUP]
            assert groups and all(c.paths == ["taints"] or all(p.startswith("taints") for p in c.paths) for c in groups)
