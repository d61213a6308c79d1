"""Tenants choosing their own pattern (egress:tenants[].pattern): a mixed stack
gets each pattern's cluster-wide pieces for that pattern's tenants only, and
each tenant exactly its own pattern's guardrails, NetworkPolicies and sources;
a single-pattern stack plans as it did."""

from __future__ import annotations

import ipaddress
import json

import pytest

from conftest import NAT, NETPOL, NODE_GROUP, SUBNET, assert_problem, config_with, planned, problems, stack_config
from patterns import offline
from patterns.admission import TENANT_DEFAULTS, TENANT_ISOLATION
from patterns.guardrails import GATEWAY_NODES, TENANT_NAMESPACES
from patterns.istio import SIDECAR_POLICY
from patterns.registry import PATTERNS
from patterns.settings import PATTERN_NAMES

STACK = "mixed"
POLICY = "kubernetes:kyverno.io/v1:ClusterPolicy"
AZS = ("eu-west-1a", "eu-west-1b", "eu-west-1c")


def inputs_by_urn(graph: offline.Graph) -> dict[str, dict]:
    return {r.urn: r.inputs for r in graph.resources}


def rules(graph, policy: str) -> dict[str, dict]:
    return {r["name"]: r for r in graph.get(POLICY, policy).inputs["spec"]["rules"]}


# --- a single-pattern stack is unchanged -----------------------------------------------


@pytest.mark.parametrize("pattern", PATTERN_NAMES)
def test_naming_the_stack_pattern_on_every_tenant_changes_nothing(pattern):
    """The per-tenant machinery (parts, merged addresses, grouped admission)
    is the identity on a single-pattern stack: same URNs, same inputs, same
    allow-list and warnings. (The URN snapshots guard the URNs of each shipped
    stack as committed before tenants could choose.)"""
    config = stack_config(pattern)
    config["egress:tenants"] = [{**t, "pattern": pattern} for t in config["egress:tenants"]]
    explicit, shipped = offline.run(pattern, config), planned(pattern)
    assert inputs_by_urn(explicit) == inputs_by_urn(shipped)
    assert explicit.plan.allow_list == shipped.plan.allow_list
    assert explicit.outputs == shipped.outputs
    assert len(shipped.plan.specs) == 1 and shipped.plan.parts[pattern].settings.tenants == shipped.plan.settings.tenants


# --- the mixed stack ---------------------------------------------------------------------


def test_every_tenant_has_its_own_pattern(graph):
    plan = graph.plan
    assert {t.name: plan.spec_of(t).name for t in plan.settings.tenants} == {
        "payments": "subnet-cidr", "reporting": "private-nat", "portal": "istio",
    }
    assert [s.name for s in plan.specs] == ["subnet-cidr", "private-nat", "istio"]
    assert [t.name for t in plan.parts["private-nat"].settings.tenants] == ["reporting"]


def test_one_vpc_cni_with_external_snat(graph):
    (addon,) = [a for a in graph.by_type("aws:eks/addon:Addon") if a.name == "egress-vpc-cni"]
    assert json.loads(addon.inputs["configurationValues"])["env"]["AWS_VPC_K8S_CNI_EXTERNALSNAT"] == "true"
    assert len(graph.by_type("egress:base:VpcCni")) == 1


def test_dedicated_node_groups_and_subnets_only_for_dedicated_tenants(graph):
    groups = {g.name: g for g in graph.by_type(NODE_GROUP)}
    assert sorted(groups) == ["egress-gateway", "egress-system", "payments", "reporting"]
    vpc, secondary = ipaddress.ip_network("10.50.0.0/16"), ipaddress.ip_network("100.64.0.0/16")
    for tenant, where in (("payments", vpc), ("reporting", secondary)):
        subnets = [graph.get(SUBNET, f"{tenant}-{az}") for az in AZS]
        assert all(ipaddress.ip_network(s.inputs["cidrBlock"]).subnet_of(where) for s in subnets)
        assert groups[tenant].inputs["subnetIds"] == [s.id for s in subnets]
        assert groups[tenant].inputs["taints"][0] == {"key": "egress/tenant", "value": tenant, "effect": "NO_SCHEDULE"}
    assert not [s for s in graph.by_type(SUBNET) if s.name.startswith("portal")]
    # The secondary range is associated (private-nat has a tenant).
    (association,) = graph.by_type("aws:ec2/vpcIpv4CidrBlockAssociation:VpcIpv4CidrBlockAssociation")
    assert association.inputs["cidrBlock"] == "100.64.0.0/16"


def test_nat_gateways_only_for_the_private_nat_tenants_profiles(graph):
    private = sorted(n.name for n in graph.by_type(NAT) if n.inputs["connectivityType"] == "private")
    assert private == [f"egress-nat-reporting-{az}" for az in AZS]


def test_mesh_and_gateway_for_the_istio_tenant_only(graph):
    (istio,) = graph.by_type("egress:patterns:Istio")
    assert [t.name for t in graph.by_type("egress:patterns:IstioTenant")] == ["portal"]
    allow = graph.get(NETPOL, "egress-istio-egress-allow-tenants").inputs["spec"]["ingress"]
    assert [r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for r in allow] == ["portal"]
    upstreams = graph.get(NETPOL, "egress-istio-egress-allow-upstreams").inputs["spec"]["egress"]
    assert [r["to"][0]["ipBlock"]["cidr"] for r in upstreams] == ["10.100.20.0/24"]


def test_each_tenant_gets_its_own_patterns_namespace_and_network_policy(graph):
    namespaces = {n.inputs["metadata"]["name"]: n.inputs["metadata"]["labels"]
                  for n in graph.by_type("kubernetes:core/v1:Namespace")}
    assert namespaces["portal"].get("istio-injection") == "enabled"
    assert "istio-injection" not in namespaces["payments"] and "istio-injection" not in namespaces["reporting-prod"]
    direct = graph.get(NETPOL, "payments-allow-egress").inputs["spec"]["egress"]
    assert [r["to"][0]["ipBlock"]["cidr"] for r in direct] == ["10.100.10.0/24", "10.101.4.16/28"]
    meshed = graph.get(NETPOL, "portal-allow-egress").inputs["spec"]["egress"]
    assert not [r for r in meshed if "ipBlock" in r["to"][0]]  # only the gateway and istiod


def test_admission_rules_follow_each_tenants_pattern(graph):
    """subnet-cidr and private-nat share the dedicated-node policies (same
    names): one policy with both tenants, not one overwriting the other; the
    rule for pods outside tenant namespaces exempts exactly those two."""
    names = [p.inputs["metadata"]["name"] for p in graph.by_type(POLICY)]
    assert len(names) == len(set(names))
    defaults = rules(graph, TENANT_DEFAULTS)
    assert sorted(defaults) == sorted(f"{t}-{r}" for t in ("payments", "reporting")
                                      for r in ("node-selector", "toleration", "on-own-nodes"))
    outside = rules(graph, TENANT_ISOLATION)["tenant-nodes-only-for-tenants"]
    assert outside["exclude"]["any"][0]["resources"]["namespaces"] == ["payments", "reporting-prod"]
    sidecar = rules(graph, SIDECAR_POLICY)
    assert all(r["match"]["any"][0]["resources"]["namespaces"] == ["portal"] for r in sidecar.values())
    labels = rules(graph, TENANT_NAMESPACES)
    assert labels["portal-namespace-labels"]["validate"]["pattern"]["metadata"]["labels"]["istio-injection"] == "enabled"
    assert "istio-injection" not in labels["payments-namespace-labels"]["validate"]["pattern"]["metadata"]["labels"]
    gateway = rules(graph, GATEWAY_NODES)["gateway-taint-only-for-gateways"]
    assert gateway["exclude"]["any"][0]["resources"]["namespaces"] == ["istio-egress", "istio-system"]


def test_allow_list_holds_each_tenants_own_sources(graph):
    by_tenant = {e["tenant"]: e["sources"] for e in graph.outputs["egressAllowList"]}
    assert by_tenant["payments"] == [graph.get(SUBNET, f"payments-{az}").inputs["cidrBlock"] for az in AZS]
    assert by_tenant["reporting"] == [f"{graph.get(NAT, f'egress-nat-reporting-{az}').inputs['privateIp']}/32"
                                      for az in AZS]
    assert by_tenant["portal"] == [graph.get(SUBNET, f"egress-gateway-{az}").inputs["cidrBlock"] for az in AZS]


# --- refusals ------------------------------------------------------------------------------


def _tenants(stack: str, **per_tenant) -> list[dict]:
    return [{**t, **per_tenant.get(t["name"], {})} for t in stack_config(stack)["egress:tenants"]]


def test_cilium_beside_another_pattern_is_refused_naming_the_tenants():
    config = config_with("subnet-cidr", tenants=_tenants("subnet-cidr", reporting={"pattern": "cilium"}))
    (found,) = [p for p in problems(config) if "cilium" in p]
    assert found.startswith("egress:tenants[1].pattern:")  # the tenant that named cilium
    assert "replaces the cluster's pod network" in found and "reporting would use cilium" in found
    assert "tenants payments subnet-cidr" in found
    config = config_with("cilium", tenants=_tenants("cilium", payments={"pattern": "istio"}))
    assert_problem(config, "egress:tenants[0].pattern", "all-cilium or cilium-free", "payments")


def test_a_patterns_checks_name_the_stack_files_tenant_index():
    """A pattern checks its own tenants: its problems still point at the
    tenant's position in the stack file, not in the pattern's list."""
    tenants = stack_config(STACK)["egress:tenants"]
    tenants[2]["upstreams"][0]["host"] = "*.corp.example"  # portal (istio), first istio tenant
    assert_problem(config_with(STACK, tenants=tenants), "egress:tenants[2].upstreams[0].host", "wildcard")


def test_ignored_tenant_keys_are_said_per_tenant():
    tenants = stack_config(STACK)["egress:tenants"]
    tenants[0]["egressProfile"] = "reporting"  # payments is subnet-cidr: the key is private-nat's
    plan = offline.plan_from_config("x", offline.engine_config(config_with(STACK, tenants=tenants)))
    assert "egress:tenants[0].egressProfile is read only by pattern private-nat; it is ignored under subnet-cidr" \
        in plan.warnings
    assert not [w for w in planned(STACK).plan.warnings if "ignored" in w]


# --- compare: one tenant under each pattern ------------------------------------------------


@pytest.fixture(scope="module")
def payments_compared():
    from patterns.views import compare as views

    return views.compare_tenant(STACK, stack_config(STACK), "payments")


def test_compare_tenant_plans_the_tenant_alone_under_each_pattern(graph, payments_compared):
    from patterns.views import compare as views
    from patterns.views.cost import estimate

    rows = {r["pattern"]: r for r in views.tenant_to_json("payments", payments_compared)["patterns"]}
    assert list(rows) == list(PATTERNS)
    current = rows["subnet-cidr"]
    assert current["current"] and current["monthlyCostDeltaUsd"] == 0 and not current["created"]
    assert current["sources"] == [graph.get(SUBNET, f"payments-{az}").inputs["cidrBlock"] for az in AZS]
    istio = rows["istio"]
    assert istio["sources"] == [graph.get(SUBNET, f"egress-gateway-{az}").inputs["cidrBlock"] for az in AZS]
    assert istio["sharedWith"] == ["reporting", "portal"]
    assert "payments" not in istio["nodeGroups"]
    assert "egress:patterns:IstioTenant payments" in istio["created"]
    assert "aws:eks/nodeGroup:NodeGroup payments" in istio["deleted"]
    (row,) = [r for r in payments_compared if r.pattern == "istio"]
    assert istio["monthlyCostDeltaUsd"] == round(estimate(row.graph).monthly_usd - estimate(graph).monthly_usd, 2)
    # Nobody else moves: the other tenants' sources are the same.
    others = {e.tenant: e.sources for e in row.graph.plan.allow_list if e.tenant != "payments"}
    assert others == {e.tenant: e.sources for e in graph.plan.allow_list if e.tenant != "payments"}
    cilium = rows["cilium"]
    assert not cilium["ok"] and "all-cilium or cilium-free" in cilium["problems"][0]
    text = views.tenant_to_text(STACK, "payments", payments_compared)
    assert "subnet-cidr (current): $" in text and "cilium: does not plan" in text


def test_compare_tenant_command(capsys, monkeypatch, payments_compared):
    from patterns.__main__ import main
    from patterns.views import compare as views

    monkeypatch.setattr(views, "compare_tenant", lambda stack, config, tenant: payments_compared)
    assert main(["compare", "--stack", STACK, "--tenant", "payments", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["tenant"] == "payments"
    monkeypatch.undo()
    assert main(["compare", "--stack", STACK, "--tenant", "nobody"]) == 2
    assert "no tenant 'nobody' in this stack; its tenants: payments, reporting, portal" in capsys.readouterr().err


def test_whole_stack_compare_sets_the_tenants_own_patterns_aside(monkeypatch):
    """compare plans the whole stack under each pattern: a mixed stack's
    tenants follow egress:pattern there (else cilium would be refused)."""
    from patterns.views import compare as views

    monkeypatch.setattr(views, "PATTERNS", {"cilium": PATTERNS["cilium"]})
    (row,) = views.compare(STACK, stack_config(STACK))
    assert row.graph is not None and {t.pattern for t in row.graph.plan.settings.tenants} == {None}
